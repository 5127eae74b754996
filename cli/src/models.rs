//! The model types the `moduletree` command knows by name (`moduletree inspect
//! MixtralForCausalLM`, `moduletree plan …`), named and styled as transformers 5 holds them:
//! Llama, Mixtral and Qwen2-MoE with fused experts (`mlp.experts.gate_up_proj`,
//! `mlp.experts.down_proj`), and DeepSeek-V3 with latent attention, dense first layers, routed
//! and shared experts. The styles are those of each configuration's `base_model_tp_plan`; they
//! hold sizes rather than tensors: a plan from a type alone needs no weights.

#![allow(
    dead_code,
    reason = "the models are inspected and planned through their registered schemas, never built"
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

/// Experts fused in one weight each: `gate_up_proj [E, 2I, H]`, `down_proj [E, H, I]`.
#[derive(ModuleTree)]
#[layer(kind = "grouped_linear")]
pub struct Bank {
    pub experts: usize,
    pub out_features: usize,
    pub in_features: usize,
}

#[derive(ModuleTree)]
pub struct Attention {
    #[layer(kind = "linear", parallel = "column")]
    pub q_proj: Linear,
    #[layer(kind = "linear", parallel = "column")]
    pub k_proj: Linear,
    #[layer(kind = "linear", parallel = "column")]
    pub v_proj: Linear,
    #[layer(kind = "linear", parallel = "row")]
    pub o_proj: Linear,
}

#[derive(ModuleTree)]
pub struct Mlp {
    #[layer(kind = "linear", parallel = "column")]
    pub gate_proj: Linear,
    #[layer(kind = "linear", parallel = "column")]
    pub up_proj: Linear,
    #[layer(kind = "linear", parallel = "row")]
    pub down_proj: Linear,
}

/// An MLP that every rank holds whole (Qwen2-MoE's shared expert is in no plan).
#[derive(ModuleTree)]
pub struct WholeMlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

#[derive(ModuleTree)]
pub struct Experts {
    #[layer(kind = "grouped_linear", parallel = "packed_column", parts = [1, 1])]
    pub gate_up_proj: Bank,
    #[layer(kind = "grouped_linear", parallel = "row")]
    pub down_proj: Bank,
}

#[derive(ModuleTree)]
pub struct LlamaDecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

#[derive(ModuleTree)]
pub struct LlamaModel {
    pub embed_tokens: Embedding,
    #[tree(layers)]
    pub layers: Vec<LlamaDecoderLayer>,
    pub norm: RmsNorm,
}

/// `model.embed_tokens`, `model.layers.<>`, `model.norm`, `lm_head`.
#[derive(ModuleTree)]
pub struct LlamaForCausalLM {
    pub model: LlamaModel,
    #[layer(kind = "linear", head, parallel = "column_gather")]
    pub lm_head: Linear,
}

#[derive(ModuleTree)]
pub struct MixtralSparseMoeBlock {
    #[layer(kind = "router")]
    pub gate: Linear,
    pub experts: Experts,
}

#[derive(ModuleTree)]
pub struct MixtralDecoderLayer {
    pub self_attn: Attention,
    pub mlp: MixtralSparseMoeBlock,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

#[derive(ModuleTree)]
pub struct MixtralModel {
    pub embed_tokens: Embedding,
    #[tree(layers)]
    pub layers: Vec<MixtralDecoderLayer>,
    pub norm: RmsNorm,
}

#[derive(ModuleTree)]
pub struct MixtralForCausalLM {
    pub model: MixtralModel,
    #[layer(kind = "linear", head, parallel = "column_gather")]
    pub lm_head: Linear,
}

#[derive(ModuleTree)]
pub struct Qwen2MoeSparseMoeBlock {
    #[layer(kind = "router")]
    pub gate: Linear,
    pub experts: Experts,
    #[expert(shared)]
    pub shared_expert: WholeMlp,
    pub shared_expert_gate: Linear,
}

/// Dense (`mlp_only_layers`) or sparse; the variant adds no segment.
#[derive(ModuleTree)]
pub enum Qwen2MoeMlp {
    Dense(Mlp),
    Sparse(Qwen2MoeSparseMoeBlock),
}

#[derive(ModuleTree)]
pub struct Qwen2MoeDecoderLayer {
    pub self_attn: Attention,
    pub mlp: Qwen2MoeMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

#[derive(ModuleTree)]
pub struct Qwen2MoeModel {
    pub embed_tokens: Embedding,
    #[tree(layers)]
    pub layers: Vec<Qwen2MoeDecoderLayer>,
    pub norm: RmsNorm,
}

#[derive(ModuleTree)]
pub struct Qwen2MoeForCausalLM {
    pub model: Qwen2MoeModel,
    #[layer(kind = "linear", head, parallel = "column_gather")]
    pub lm_head: Linear,
}

/// Multi-head latent attention, whole on every rank (transformers plans none of it).
#[derive(ModuleTree)]
pub struct DeepseekV3Attention {
    pub q_a_proj: Linear,
    pub q_a_layernorm: RmsNorm,
    pub q_b_proj: Linear,
    pub kv_a_proj_with_mqa: Linear,
    pub kv_a_layernorm: RmsNorm,
    pub kv_b_proj: Linear,
    pub o_proj: Linear,
}

#[derive(ModuleTree)]
pub struct DeepseekV3Moe {
    #[layer(kind = "router")]
    pub gate: Linear,
    pub experts: Experts,
    #[expert(shared)]
    pub shared_experts: Mlp,
}

#[derive(ModuleTree)]
pub enum DeepseekV3Mlp {
    Dense(Mlp),
    Moe(DeepseekV3Moe),
}

#[derive(ModuleTree)]
pub struct DeepseekV3DecoderLayer {
    pub self_attn: DeepseekV3Attention,
    pub mlp: DeepseekV3Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

#[derive(ModuleTree)]
pub struct DeepseekV3Model {
    pub embed_tokens: Embedding,
    #[tree(layers)]
    pub layers: Vec<DeepseekV3DecoderLayer>,
    pub norm: RmsNorm,
}

#[derive(ModuleTree)]
pub struct DeepseekV3ForCausalLM {
    pub model: DeepseekV3Model,
    #[layer(kind = "linear", head, parallel = "column_gather")]
    pub lm_head: Linear,
}
