//! candle-transformers' own Llama and Mixtral (unmodified, from crates.io) with PEFT adapters
//! merged into their weights at load by `PeftWeights`, against the logits PyTorch computes
//! (`fixtures/llama_tiny`, `fixtures/moe`), and the refusals of adapters the checkpoint cannot
//! take.
#![cfg(feature = "candle")]

mod candle_common;
mod fixture_common;

use std::path::{Path, PathBuf};

use candle_common::{json_tokens, max_diff, read_json, table};
use candle_core::Device;
use moduletree::candle::PeftWeights;
use moduletree::peft::PeftError;
use moduletree_candle_examples::transformers::logits;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn run(model: &Path, adapter: Option<&Path>, tokens: &[u32]) -> Vec<Vec<f32>> {
    logits(model, adapter, tokens)
        .unwrap_or_else(|error| panic!("{}: {error}", model.display()))
        .to_vec2::<f32>()
        .unwrap()
}

#[test]
fn llama_with_adapters_merged_at_load_matches_pytorch() {
    let llama = fixtures().join("llama_tiny");
    let reference = read_json(&llama.join("logits.json"));
    let tokens = json_tokens(&reference);
    let model = llama.join("model");
    for (adapter, expected) in [
        (None, "base"),
        (Some("adapter"), "lora"),
        (Some("adapter_rslora"), "rslora"),
    ] {
        let adapter = adapter.map(|name| llama.join(name));
        let found = run(&model, adapter.as_deref(), &tokens);
        let diff = max_diff(&found, &table(&reference[expected]));
        assert!(diff < 1e-4, "{expected}: {diff}");
    }
}

#[test]
fn mixtral_with_a_per_expert_adapter_merged_at_load_matches_pytorch() {
    let moe = fixtures().join("moe");
    let reference = read_json(&moe.join("logits.json"));
    let tokens = json_tokens(&reference);
    let model = moe.join("mixtral/model");
    let base = run(&model, None, &tokens);
    let diff = max_diff(
        &base,
        &table(&reference["models"]["mixtral"]["base_transformers4"]),
    );
    assert!(diff < 1e-4, "base: {diff}");
    for name in ["per_expert_v4", "per_expert_v4_rslora"] {
        let found = run(&model, Some(&moe.join("mixtral").join(name)), &tokens);
        let expected =
            table(&reference["adapters"][format!("mixtral/{name}")]["merged_transformers4"]);
        let diff = max_diff(&found, &expected);
        assert!(diff < 1e-4, "{name}: {diff}");
        assert!(max_diff(&found, &base) > 1e-3, "{name} changed nothing");
    }
}

#[test]
fn the_weights_record_what_the_adapter_changed() {
    let llama = fixtures().join("llama_tiny");
    let weights =
        PeftWeights::load(llama.join("model"), llama.join("adapter"), &Device::Cpu).unwrap();
    let changed: Vec<&str> = weights.changed().collect();
    assert_eq!(changed.len(), 6, "{changed:?}");
    assert!(changed.contains(&"model.layers.1.mlp.down_proj.weight"));
    assert_eq!(weights.adapted().len(), 6);
    assert_eq!(weights.adapted()[0].scale, 3.0);
}

#[test]
fn a_fused_expert_adapter_merges_into_the_per_expert_checkpoint_as_pytorch_does() {
    // The transformers 5 Mixtral adapter names the fused banks (`mlp.experts.gate_up_proj`); the
    // checkpoint keeps its experts one by one (`block_sparse_moe.experts.N.w1`). Split per
    // expert, it merges to PyTorch's logits of the fused model with the adapter merged.
    let moe = fixtures().join("moe");
    let reference = read_json(&moe.join("logits.json"));
    let tokens = json_tokens(&reference);
    let found = run(
        &moe.join("mixtral/model"),
        Some(&moe.join("mixtral/fused")),
        &tokens,
    );
    let expected = table(&reference["adapters"]["mixtral/fused"]["merged"]);
    let diff = max_diff(&found, &expected);
    assert!(diff < 1e-4, "{diff}");
    let weights = PeftWeights::load(
        moe.join("mixtral/model"),
        moe.join("mixtral/fused"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(
        weights
            .changed()
            .any(|name| name == "model.layers.1.block_sparse_moe.experts.3.w2.weight")
    );
}

#[test]
fn an_adapter_the_checkpoint_cannot_take_is_refused_whole() {
    // The Llama adapter adapts `down_proj`; Mixtral's checkpoint calls its experts' `w2`.
    let moe = fixtures().join("moe/mixtral");
    let llama = fixtures().join("llama_tiny");
    let error =
        PeftWeights::load(moe.join("model"), llama.join("adapter"), &Device::Cpu).unwrap_err();
    assert!(
        matches!(error, PeftError::Selection { .. } | PeftError::Shape { .. }),
        "{error}"
    );
    let error =
        PeftWeights::load(fixtures().join("nowhere"), moe.join("fused"), &Device::Cpu).unwrap_err();
    assert!(matches!(error, PeftError::Checkpoint { .. }), "{error}");
    assert!(error.to_string().contains("nowhere"), "{error}");
}

/// The per-expert Mixtral checkpoint rewritten as transformers 5 holds it in memory: experts
/// fused (`mlp.experts.gate_up_proj [E, 2I, H]` = w1 over w3, `mlp.experts.down_proj [E, H, I]`).
fn fused_checkpoint(dir: &Path) {
    let per_expert = candle_core::safetensors::load(
        fixtures().join("moe/mixtral/model/model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut fused = std::collections::HashMap::new();
    for (name, tensor) in &per_expert {
        if !name.contains(".experts.") {
            fused.insert(name.replace("block_sparse_moe", "mlp"), tensor.clone());
        }
    }
    for layer in 0..2 {
        let expert = |e: usize, w: &str| {
            per_expert[&format!("model.layers.{layer}.block_sparse_moe.experts.{e}.{w}.weight")]
                .clone()
        };
        let gate_up: Vec<_> = (0..4)
            .map(|e| candle_core::Tensor::cat(&[expert(e, "w1"), expert(e, "w3")], 0).unwrap())
            .collect();
        let down: Vec<_> = (0..4).map(|e| expert(e, "w2")).collect();
        let prefix = format!("model.layers.{layer}.mlp.experts");
        fused.insert(
            format!("{prefix}.gate_up_proj"),
            candle_core::Tensor::stack(&gate_up, 0).unwrap(),
        );
        fused.insert(
            format!("{prefix}.down_proj"),
            candle_core::Tensor::stack(&down, 0).unwrap(),
        );
    }
    candle_core::safetensors::save(&fused, dir.join("model.safetensors")).unwrap();
}

#[test]
fn fused_experts_take_target_parameters_adapters_as_the_derived_model_does() {
    use moduletree::candle::{ExpertBank, LoadMode, load_peft_adapter};
    use moduletree_candle_examples::moe::MoeForCausalLM;

    let dir = tempfile::tempdir().unwrap();
    fused_checkpoint(dir.path());
    let adapter = fixtures().join("moe/mixtral/fused");
    let weights = PeftWeights::load(dir.path(), &adapter, &Device::Cpu).unwrap();
    let changed: Vec<&str> = weights.changed().collect();
    assert!(
        changed.contains(&"model.layers.1.mlp.experts.gate_up_proj"),
        "{changed:?}"
    );

    // The derived model (experts fused in `ExpertBank`s) merges the same adapter to the same
    // bank weights.
    let mut model = MoeForCausalLM::<candle_nn::Linear>::load(
        &fixtures().join("moe/mixtral/model"),
        &Device::Cpu,
    )
    .unwrap();
    load_peft_adapter(&mut model, &adapter, LoadMode::Merge).unwrap();
    let mut compared = 0;
    moduletree::walk(&model, |node| {
        if let Some(bank) = node.downcast_ref::<ExpertBank>() {
            let name = node.path().to_string();
            let diff = max_tensor_diff(&weights.tensors()[&name], bank.weight());
            assert!(diff < 1e-6, "{name}: {diff}");
            compared += 1;
        }
    });
    assert_eq!(compared, 4);
}

#[test]
fn weights_the_model_never_reads_are_reported() {
    let llama = fixtures().join("llama_tiny");
    let weights =
        PeftWeights::load(llama.join("model"), llama.join("adapter"), &Device::Cpu).unwrap();
    let (vb, reads) = weights.var_builder(candle_core::DType::F32, &Device::Cpu);
    // A model that reads one adapted weight of six, and some untouched ones.
    vb.get((16, 16), "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    vb.get(16, "model.norm.weight").unwrap();
    let error = reads.finish().unwrap_err();
    assert!(
        matches!(&error, PeftError::NotRead { tensors } if tensors.len() == 5),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("the model never read 5 weight(s) the adapter changed: `model.layers.0.mlp.down_proj.weight`"),
        "{error}"
    );
    // A wrong shape is candle's own error, naming the tensor.
    let error = vb.get((4, 4), "model.norm.weight").unwrap_err();
    assert!(error.to_string().contains("model.norm.weight"), "{error}");
}

/// GPT-OSS's banks are stored `[E, in, out]`: the weights take the adapter in that orientation,
/// as PEFT's `merge_and_unload` does (the merge fixture's `merged.safetensors`).
#[test]
fn transposed_banks_take_the_adapter_as_peft_merges_it() {
    let case = fixtures().join("merge/gpt_oss");
    let weights = PeftWeights::load(case.join("base"), case.join("adapter"), &Device::Cpu).unwrap();
    let expected =
        candle_core::safetensors::load(case.join("merged.safetensors"), &Device::Cpu).unwrap();
    let mut compared = 0;
    for name in weights.changed() {
        let diff = max_tensor_diff(&weights.tensors()[name], &expected[name]);
        assert!(diff < 1e-6, "{name}: {diff}");
        compared += 1;
    }
    // q_proj and both banks in 2 layers.
    assert_eq!(compared, 6);
}

fn max_tensor_diff(left: &candle_core::Tensor, right: &candle_core::Tensor) -> f32 {
    (left - right)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
