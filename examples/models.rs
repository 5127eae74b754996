//! Model shapes for the `inspect` example, named the way HuggingFace names their modules: a
//! Llama-like dense model, a Mixtral-like mixture of experts and a DeepSeek-V3-like model whose
//! first layers are dense. They hold sizes rather than tensors: only the trees matter here.
//! Being non-generic, every type registers itself for `moduletree::registry`.

#![allow(
    dead_code,
    reason = "the models are inspected through their registered schemas and never built"
)]

use moduletree::ModuleTree;

/// A dense projection.
#[derive(ModuleTree)]
#[layer(kind = "linear")]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
}

/// A token embedding table.
#[derive(ModuleTree)]
#[layer(kind = "embedding")]
pub struct Embedding {
    pub vocab: usize,
    pub dim: usize,
}

/// An RMS normalisation.
#[derive(ModuleTree)]
#[layer(kind = "norm")]
pub struct RmsNorm {
    pub dim: usize,
}

#[derive(ModuleTree)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
}

#[derive(ModuleTree)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

#[derive(ModuleTree)]
pub struct LlamaDecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

/// `model.embed_tokens`, `model.layers.<>`, `model.norm`, `lm_head`.
#[derive(ModuleTree)]
pub struct LlamaForCausalLm {
    #[tree(rename = "model.embed_tokens")]
    pub embed_tokens: Embedding,
    #[tree(rename = "model.layers", layers)]
    pub layers: Vec<LlamaDecoderLayer>,
    #[tree(rename = "model.norm")]
    pub norm: RmsNorm,
    #[layer(kind = "linear", head)]
    pub lm_head: Linear,
}

/// Mixtral's expert: `w1` (gate), `w2` (down), `w3` (up).
#[derive(ModuleTree)]
pub struct MixtralExpert {
    pub w1: Linear,
    pub w2: Linear,
    pub w3: Linear,
}

#[derive(ModuleTree)]
pub struct MixtralSparseMoe {
    #[layer(kind = "router")]
    pub gate: Linear,
    #[expert]
    pub experts: Vec<MixtralExpert>,
}

#[derive(ModuleTree)]
pub struct MixtralDecoderLayer {
    pub self_attn: Attention,
    pub block_sparse_moe: MixtralSparseMoe,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

#[derive(ModuleTree)]
pub struct MixtralForCausalLm {
    #[tree(rename = "model.embed_tokens")]
    pub embed_tokens: Embedding,
    #[tree(rename = "model.layers", layers)]
    pub layers: Vec<MixtralDecoderLayer>,
    #[tree(rename = "model.norm")]
    pub norm: RmsNorm,
    #[layer(kind = "linear", head)]
    pub lm_head: Linear,
}

/// Multi-head latent attention: low-rank query and key-value projections.
#[derive(ModuleTree)]
pub struct MlaAttention {
    pub q_a_proj: Linear,
    pub q_a_layernorm: RmsNorm,
    pub q_b_proj: Linear,
    pub kv_a_proj_with_mqa: Linear,
    pub kv_a_layernorm: RmsNorm,
    pub kv_b_proj: Linear,
    pub o_proj: Linear,
}

#[derive(ModuleTree)]
pub struct DeepseekMoe {
    #[expert]
    pub experts: Vec<Mlp>,
    #[layer(kind = "router")]
    pub gate: Linear,
    pub shared_experts: Mlp,
}

/// The first layers are dense, the others a mixture of experts; the variant adds no segment.
#[derive(ModuleTree)]
pub enum DeepseekMlp {
    Dense(Mlp),
    Moe(DeepseekMoe),
}

#[derive(ModuleTree)]
pub struct DeepseekDecoderLayer {
    pub self_attn: MlaAttention,
    pub mlp: DeepseekMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

#[derive(ModuleTree)]
pub struct DeepseekV3ForCausalLm {
    #[tree(rename = "model.embed_tokens")]
    pub embed_tokens: Embedding,
    #[tree(rename = "model.layers", layers)]
    pub layers: Vec<DeepseekDecoderLayer>,
    #[tree(rename = "model.norm")]
    pub norm: RmsNorm,
    #[layer(kind = "linear", head)]
    pub lm_head: Linear,
}
