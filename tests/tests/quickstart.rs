//! `cargo run --example quickstart` prints the module tree of its Mixtral-like model (two layers,
//! two experts each), its LoRA targets, its expert layers and a resolved target spec, exactly as
//! below.

use std::path::Path;
use std::process::Command;

/// Written from the model in `examples/quickstart.rs`: HuggingFace's Mixtral names, the two
/// identical layers (and the two identical experts of each) folded into one `0..1 ×` line, kinds
/// and flags in brackets; the compile-checked spec keeps `q_proj`, `v_proj` and every expert's
/// `w1` of layer 1. The weights: per layer 4 × 8·8 (attention) +
/// 2·8 (router) + 2 × 3 × 16·8 (experts) = 1040; two layers, plus 32·8 for the embedding and for
/// the head: 2592.
const EXPECTED: &str = "\
module tree (as PyTorch's print(model); identical layers fold into one line):
MixtralForCausalLm
  model: Model
    embed_tokens: Embedding [embedding]
    layers: 0..1 × DecoderLayer
      self_attn: Attention
        q_proj: Linear [linear]
        k_proj: Linear [linear]
        v_proj: Linear [linear]
        o_proj: Linear [linear]
      block_sparse_moe: SparseMoe
        gate: Linear [router]
        experts: 0..1 × Expert [expert]
          w1: Linear [linear, expert]
          w2: Linear [linear, expert]
          w3: Linear [linear, expert]
      input_layernorm: RmsNorm [norm]
    norm: RmsNorm [norm]
  lm_head: Linear [linear, head]

find_all_linear_modules, the PEFT names of the linear layers (no head, no router): [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"w1\", \"w2\", \"w3\"]
find_all_embedding_modules: [\"embed_tokens\"]
find_all_router_modules: [\"gate\"]

set_linear_is_expert, the layers it marked as routed experts:
  model.layers.0.block_sparse_moe.experts.0.w1
  model.layers.0.block_sparse_moe.experts.0.w2
  model.layers.0.block_sparse_moe.experts.0.w3
  model.layers.0.block_sparse_moe.experts.1.w1
  model.layers.0.block_sparse_moe.experts.1.w2
  model.layers.0.block_sparse_moe.experts.1.w3
  model.layers.1.block_sparse_moe.experts.0.w1
  model.layers.1.block_sparse_moe.experts.0.w2
  model.layers.1.block_sparse_moe.experts.0.w3
  model.layers.1.block_sparse_moe.experts.1.w1
  model.layers.1.block_sparse_moe.experts.1.w2
  model.layers.1.block_sparse_moe.experts.1.w3
weights of the linear and embedding layers, read by downcasting nodes: 2592

targets!(\"q_proj\", \"v_proj\", \"experts.<>.w1\"), checked at compile time, in layer 1:
  model.layers.1.self_attn.q_proj
  model.layers.1.self_attn.v_proj
  model.layers.1.block_sparse_moe.experts.0.w1
  model.layers.1.block_sparse_moe.experts.1.w1
warnings of the resolution: none
";

#[test]
fn quickstart_prints_the_tree_the_targets_and_the_experts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--example", "quickstart"])
        .current_dir(&root)
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the example failed:\n{stderr}");
    let stdout = String::from_utf8(output.stdout).expect("the output is UTF-8");
    assert_eq!(stdout, EXPECTED, "stderr:\n{stderr}");
}
