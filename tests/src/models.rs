//! The test models; see the crate docs.

use moduletree::ModuleTree;

/// A dense projection that can hold the run-time expert flag.
#[derive(ModuleTree, Clone, Debug, PartialEq)]
#[layer(kind = "linear")]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    #[layer(expert_flag)]
    pub is_expert: bool,
}

impl Linear {
    #[must_use]
    pub fn new(in_features: usize, out_features: usize) -> Self {
        Linear {
            in_features,
            out_features,
            is_expert: false,
        }
    }
}

#[derive(ModuleTree, Clone, Debug, PartialEq)]
#[layer(kind = "embedding")]
pub struct Embedding {
    pub vocab: usize,
    pub dim: usize,
}

#[derive(ModuleTree, Clone, Debug, PartialEq)]
#[layer(kind = "norm")]
pub struct RmsNorm {
    pub dim: usize,
}

/// A causal language model: `model.embed_tokens`, `model.layers.<>`, `model.norm`, `lm_head`.
#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct ForCausalLm<L> {
    pub model: Decoder<L>,
    #[layer(kind = "linear", head)]
    pub lm_head: Linear,
}

#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct Decoder<L> {
    pub embed_tokens: Embedding,
    #[tree(layers)]
    pub layers: Vec<L>,
    pub norm: RmsNorm,
}

#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
}

/// A SwiGLU MLP: `gate_proj`, `up_proj`, `down_proj`.
#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    #[must_use]
    pub fn new(hidden: usize, intermediate: usize) -> Self {
        Mlp {
            gate_proj: Linear::new(hidden, intermediate),
            up_proj: Linear::new(hidden, intermediate),
            down_proj: Linear::new(intermediate, hidden),
        }
    }
}

impl Attention {
    #[must_use]
    pub fn new(hidden: usize) -> Self {
        Attention {
            q_proj: Linear::new(hidden, hidden),
            k_proj: Linear::new(hidden, hidden),
            v_proj: Linear::new(hidden, hidden),
            o_proj: Linear::new(hidden, hidden),
        }
    }
}

const HIDDEN: usize = 16;
const VOCAB: usize = 32;

fn causal_lm<L>(layers: Vec<L>) -> ForCausalLm<L> {
    ForCausalLm {
        model: Decoder {
            embed_tokens: Embedding {
                vocab: VOCAB,
                dim: HIDDEN,
            },
            layers,
            norm: RmsNorm { dim: HIDDEN },
        },
        lm_head: Linear::new(HIDDEN, VOCAB),
    }
}

// ---------------------------------------------------------------- Llama

#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct LlamaDecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

pub type Llama = ForCausalLm<LlamaDecoderLayer>;

#[must_use]
pub fn llama(layers: usize) -> Llama {
    causal_lm(
        (0..layers)
            .map(|_| LlamaDecoderLayer {
                self_attn: Attention::new(HIDDEN),
                mlp: Mlp::new(HIDDEN, 2 * HIDDEN),
                input_layernorm: RmsNorm { dim: HIDDEN },
                post_attention_layernorm: RmsNorm { dim: HIDDEN },
            })
            .collect(),
    )
}

// ---------------------------------------------------------------- Mixtral

/// Mixtral's expert: `w1` (gate), `w2` (down), `w3` (up).
#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct MixtralExpert {
    pub w1: Linear,
    pub w2: Linear,
    pub w3: Linear,
}

#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct MixtralSparseMoe {
    #[layer(kind = "router")]
    pub gate: Linear,
    #[expert]
    pub experts: Vec<MixtralExpert>,
}

#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct MixtralDecoderLayer {
    pub self_attn: Attention,
    pub block_sparse_moe: MixtralSparseMoe,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

pub type Mixtral = ForCausalLm<MixtralDecoderLayer>;

#[must_use]
pub fn mixtral(layers: usize, experts: usize) -> Mixtral {
    causal_lm(
        (0..layers)
            .map(|_| MixtralDecoderLayer {
                self_attn: Attention::new(HIDDEN),
                block_sparse_moe: MixtralSparseMoe {
                    gate: Linear::new(HIDDEN, experts),
                    experts: (0..experts)
                        .map(|_| MixtralExpert {
                            w1: Linear::new(HIDDEN, 2 * HIDDEN),
                            w2: Linear::new(2 * HIDDEN, HIDDEN),
                            w3: Linear::new(HIDDEN, 2 * HIDDEN),
                        })
                        .collect(),
                },
                input_layernorm: RmsNorm { dim: HIDDEN },
                post_attention_layernorm: RmsNorm { dim: HIDDEN },
            })
            .collect(),
    )
}

// ---------------------------------------------------------------- Qwen2-MoE

/// Qwen2-MoE's sparse block: a router, routed experts, and one shared expert that every token
/// uses (replicated, not expert-parallel, so not an expert) with its own scalar gate.
#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct Qwen2MoeSparseBlock {
    #[layer(kind = "router")]
    pub gate: Linear,
    #[expert]
    pub experts: Vec<Mlp>,
    #[expert(shared)]
    pub shared_expert: Mlp,
    pub shared_expert_gate: Linear,
}

/// Dense and sparse layers mixed in one list; the variant adds no path segment.
#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub enum Qwen2MoeMlp {
    Dense(Mlp),
    Sparse(Qwen2MoeSparseBlock),
}

#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct Qwen2MoeDecoderLayer {
    pub self_attn: Attention,
    pub mlp: Qwen2MoeMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

pub type Qwen2Moe = ForCausalLm<Qwen2MoeDecoderLayer>;

/// Layers whose index is in `dense_layers` are dense (Qwen2-MoE's `mlp_only_layers`).
#[must_use]
pub fn qwen2_moe(layers: usize, experts: usize, dense_layers: &[usize]) -> Qwen2Moe {
    causal_lm(
        (0..layers)
            .map(|index| Qwen2MoeDecoderLayer {
                self_attn: Attention::new(HIDDEN),
                mlp: if dense_layers.contains(&index) {
                    Qwen2MoeMlp::Dense(Mlp::new(HIDDEN, 2 * HIDDEN))
                } else {
                    Qwen2MoeMlp::Sparse(Qwen2MoeSparseBlock {
                        gate: Linear::new(HIDDEN, experts),
                        experts: (0..experts).map(|_| Mlp::new(HIDDEN, HIDDEN)).collect(),
                        shared_expert: Mlp::new(HIDDEN, 2 * HIDDEN),
                        shared_expert_gate: Linear::new(HIDDEN, 1),
                    })
                },
                input_layernorm: RmsNorm { dim: HIDDEN },
                post_attention_layernorm: RmsNorm { dim: HIDDEN },
            })
            .collect(),
    )
}

// ---------------------------------------------------------------- DeepSeek-V3

/// Multi-head latent attention: low-rank query and key-value projections.
#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct MlaAttention {
    pub q_a_proj: Linear,
    pub q_a_layernorm: RmsNorm,
    pub q_b_proj: Linear,
    pub kv_a_proj_with_mqa: Linear,
    pub kv_a_layernorm: RmsNorm,
    pub kv_b_proj: Linear,
    pub o_proj: Linear,
}

/// DeepSeek-V3's router: a scoring weight, not a plain linear.
#[derive(ModuleTree, Clone, Debug, PartialEq)]
#[layer(kind = "router")]
pub struct TopkRouter {
    pub experts: usize,
    pub top_k: usize,
}

/// Routed experts as a list of MLPs.
#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct DeepseekMoe {
    #[expert]
    pub experts: Vec<Mlp>,
    pub gate: TopkRouter,
    #[expert(shared)]
    pub shared_experts: Mlp,
}

/// Routed experts fused into grouped weights with an expert axis.
#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct FusedExperts {
    #[layer(kind = "grouped_linear")]
    pub gate_up_proj: Linear,
    #[layer(kind = "grouped_linear")]
    pub down_proj: Linear,
}

#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct DeepseekFusedMoe {
    pub experts: FusedExperts,
    pub gate: TopkRouter,
    #[expert(shared)]
    pub shared_experts: Mlp,
}

#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub enum DeepseekMlp {
    Dense(Mlp),
    Moe(DeepseekMoe),
    Fused(DeepseekFusedMoe),
}

#[derive(ModuleTree, Clone, Debug, PartialEq)]
pub struct DeepseekDecoderLayer {
    pub self_attn: MlaAttention,
    pub mlp: DeepseekMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

pub type DeepseekV3 = ForCausalLm<DeepseekDecoderLayer>;

/// A DeepSeek-V3-shaped model: the first `dense` layers dense, the others MoE with `experts`
/// routed experts (a `Vec`, or fused when `fused`) and one shared expert.
#[must_use]
pub fn deepseek_v3(layers: usize, dense: usize, experts: usize, fused: bool) -> DeepseekV3 {
    let attention = || MlaAttention {
        q_a_proj: Linear::new(HIDDEN, 8),
        q_a_layernorm: RmsNorm { dim: 8 },
        q_b_proj: Linear::new(8, HIDDEN),
        kv_a_proj_with_mqa: Linear::new(HIDDEN, 12),
        kv_a_layernorm: RmsNorm { dim: 8 },
        kv_b_proj: Linear::new(8, 2 * HIDDEN),
        o_proj: Linear::new(HIDDEN, HIDDEN),
    };
    let router = TopkRouter { experts, top_k: 8 };
    causal_lm(
        (0..layers)
            .map(|index| DeepseekDecoderLayer {
                self_attn: attention(),
                mlp: if index < dense {
                    DeepseekMlp::Dense(Mlp::new(HIDDEN, 4 * HIDDEN))
                } else if fused {
                    DeepseekMlp::Fused(DeepseekFusedMoe {
                        experts: FusedExperts {
                            gate_up_proj: Linear::new(HIDDEN, 2 * HIDDEN),
                            down_proj: Linear::new(HIDDEN, HIDDEN),
                        },
                        gate: router.clone(),
                        shared_experts: Mlp::new(HIDDEN, HIDDEN),
                    })
                } else {
                    DeepseekMlp::Moe(DeepseekMoe {
                        experts: (0..experts).map(|_| Mlp::new(HIDDEN, HIDDEN)).collect(),
                        gate: router.clone(),
                        shared_experts: Mlp::new(HIDDEN, HIDDEN),
                    })
                },
                input_layernorm: RmsNorm { dim: HIDDEN },
                post_attention_layernorm: RmsNorm { dim: HIDDEN },
            })
            .collect(),
    )
}
