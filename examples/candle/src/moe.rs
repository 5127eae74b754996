//! Mixture-of-experts models as transformers 5 holds them in memory: Mixtral and Qwen2-MoE with
//! their routed experts fused in two [`ExpertBank`]s per layer (`mlp.experts.gate_up_proj
//! [E, 2I, H]`, gate rows first, and `mlp.experts.down_proj [E, H, I]`), loaded from the
//! per-expert keys `save_pretrained` writes (`experts.K.w1/w3/w2` under Mixtral's
//! `block_sparse_moe`, `experts.K.gate_proj/up_proj/down_proj` for Qwen2-MoE), as transformers
//! 5's `conversion_mapping` fuses them. The paths are transformers 5's: the block is `mlp` in
//! both families.
//!
//! Routing follows each family exactly (`modeling_mixtral.py`, `modeling_qwen2_moe.py`): a
//! softmax over the router's logits in float32, the top `k` experts, renormalised to sum to 1
//! (Mixtral always; Qwen2-MoE when `norm_topk_prob`), and for Qwen2-MoE a shared expert every
//! token passes through, weighted by `sigmoid(shared_expert_gate(x))`. The shared expert is
//! typed `#[expert(shared)]`: replicated, not a routed expert.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, RmsNorm, VarBuilder};
use moduletree::ModuleTree;
use moduletree::candle::ExpertBank;
use serde::Deserialize;

use crate::llama::{Attention, LlamaConfig, Mlp, Rope, causal_mask};
use crate::{ModelError, Projection};

/// The fields of a Mixtral or Qwen2-MoE `config.json` (transformers 5) that the model uses.
#[derive(Clone, Debug, Deserialize)]
pub struct MoeConfig {
    /// `"mixtral"` or `"qwen2_moe"`.
    pub model_type: String,
    /// Rows of the embedding table.
    pub vocab_size: usize,
    /// The model width.
    pub hidden_size: usize,
    /// Mixtral's expert width; Qwen2-MoE's dense MLP width.
    pub intermediate_size: usize,
    /// Qwen2-MoE's expert width.
    pub moe_intermediate_size: Option<usize>,
    /// Qwen2-MoE's shared expert width.
    pub shared_expert_intermediate_size: Option<usize>,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: Option<usize>,
    /// Mixtral's routed experts.
    pub num_local_experts: Option<usize>,
    /// Qwen2-MoE's routed experts.
    pub num_experts: Option<usize>,
    /// Experts each token is routed to.
    pub num_experts_per_tok: usize,
    /// Whether the top-k weights are renormalised (Qwen2-MoE; Mixtral always is).
    pub norm_topk_prob: Option<bool>,
    /// Qwen2-MoE: layers whose MLP is dense.
    #[serde(default)]
    pub mlp_only_layers: Vec<usize>,
    /// Qwen2-MoE: every this many layers is sparse.
    pub decoder_sparse_step: Option<usize>,
    /// Qwen2-MoE: biases on `q`/`k`/`v`.
    pub qkv_bias: Option<bool>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE settings (transformers 5).
    pub rope_parameters: Option<serde_json::Value>,
    /// RoPE base (transformers 4).
    pub rope_theta: Option<f64>,
    /// The head reuses the embedding table.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

impl MoeConfig {
    /// Reads `config.json`.
    ///
    /// # Errors
    ///
    /// Unreadable or malformed files, and a family other than Mixtral and Qwen2-MoE.
    pub fn from_file(file: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(file).map_err(|source| ModelError::Io {
            file: file.display().to_string(),
            source,
        })?;
        let config: MoeConfig =
            serde_json::from_str(&text).map_err(|error| ModelError::Config {
                file: file.display().to_string(),
                message: error.to_string(),
            })?;
        if !matches!(config.model_type.as_str(), "mixtral" | "qwen2_moe") {
            return Err(ModelError::Config {
                file: file.display().to_string(),
                message: format!(
                    "`model_type` {:?} is not a supported MoE family; expected \"mixtral\" or \"qwen2_moe\"",
                    config.model_type
                ),
            });
        }
        Ok(config)
    }

    fn is_mixtral(&self) -> bool {
        self.model_type == "mixtral"
    }

    fn experts(&self) -> usize {
        self.num_local_experts.or(self.num_experts).unwrap_or(0)
    }

    fn expert_width(&self) -> usize {
        self.moe_intermediate_size.unwrap_or(self.intermediate_size)
    }

    /// Whether layer `index` routes to experts (every Mixtral layer; Qwen2-MoE's layers not in
    /// `mlp_only_layers` whose `index + 1` is a multiple of `decoder_sparse_step`).
    fn is_sparse(&self, index: usize) -> bool {
        if self.is_mixtral() {
            return true;
        }
        let step = self.decoder_sparse_step.unwrap_or(1).max(1);
        !self.mlp_only_layers.contains(&index) && (index + 1).is_multiple_of(step)
    }

    fn attention(&self) -> LlamaConfig {
        LlamaConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: None,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            rope_parameters: self.rope_parameters.clone(),
            rope_scaling: None,
            tie_word_embeddings: self.tie_word_embeddings,
            attention_bias: false,
            mlp_bias: false,
        }
    }
}

/// A causal language model with fused experts.
#[derive(Debug, ModuleTree)]
pub struct MoeForCausalLM<P: Projection> {
    /// The decoder.
    pub model: MoeModel<P>,
    /// The output head.
    #[layer(kind = "linear", head)]
    pub lm_head: Linear,
}

/// The decoder.
#[derive(Debug, ModuleTree)]
pub struct MoeModel<P: Projection> {
    /// The token embeddings.
    pub embed_tokens: Embedding,
    /// The decoder layers.
    #[tree(layers)]
    pub layers: Vec<MoeLayer<P>>,
    /// The final norm.
    pub norm: RmsNorm,
    #[tree(skip)]
    rope: Rope,
}

/// One decoder layer.
#[derive(Debug, ModuleTree)]
pub struct MoeLayer<P: Projection> {
    /// Self-attention.
    pub self_attn: Attention<P>,
    /// The feed-forward block: dense or routed.
    pub mlp: FeedForward<P>,
    /// The norm before attention.
    pub input_layernorm: RmsNorm,
    /// The norm before the feed-forward block.
    pub post_attention_layernorm: RmsNorm,
}

/// A dense MLP or a sparse mixture of experts; the variant adds no path segment.
#[derive(Debug, ModuleTree)]
pub enum FeedForward<P: Projection> {
    /// `mlp.gate_proj`, …
    Dense(Mlp<P>),
    /// `mlp.gate`, `mlp.experts.*`, `mlp.shared_expert.*`.
    Sparse(SparseMoe<P>),
}

/// Routed experts fused in two banks.
#[derive(Debug, ModuleTree)]
pub struct FusedExperts {
    /// `[E, 2I, H]`: each expert's gate rows, then its up rows.
    pub gate_up_proj: ExpertBank,
    /// `[E, H, I]`.
    pub down_proj: ExpertBank,
}

impl FusedExperts {
    /// The routed experts' output for `x`, `[tokens, H]`: each token's sum over its chosen
    /// experts `(expert, weight)` of `weight · down(silu(gate(x)) · up(x))`, as transformers'
    /// `MixtralExperts.forward` computes it, one batched product per expert that has tokens.
    ///
    /// # Errors
    ///
    /// An expert index out of range, or a candle error.
    pub fn forward_routed(
        &self,
        x: &Tensor,
        routes: &[Vec<(usize, f32)>],
    ) -> candle_core::Result<Tensor> {
        let mut per_expert: Vec<(Vec<u32>, Vec<f32>)> =
            vec![(Vec::new(), Vec::new()); self.gate_up_proj.num_experts()];
        for (token, chosen) in routes.iter().enumerate() {
            let token = u32::try_from(token).map_err(candle_core::Error::wrap)?;
            for &(expert, weight) in chosen {
                let Some((tokens, weights)) = per_expert.get_mut(expert) else {
                    candle_core::bail!("token {token} is routed to expert {expert}, out of range");
                };
                tokens.push(token);
                weights.push(weight);
            }
        }
        let width = self.down_proj.in_features();
        let mut out = x.zeros_like()?;
        for (expert, (tokens, weights)) in per_expert.into_iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let count = tokens.len();
            let ids = Tensor::from_vec(tokens, count, x.device())?;
            let weights = Tensor::from_vec(weights, (count, 1), x.device())?;
            let gate_up = self
                .gate_up_proj
                .forward_expert(expert, &x.index_select(&ids, 0)?)?;
            let gate = candle_nn::ops::silu(&gate_up.narrow(D::Minus1, 0, width)?)?;
            let up = gate_up.narrow(D::Minus1, width, width)?;
            let y = self
                .down_proj
                .forward_expert(expert, &(gate * up)?)?
                .broadcast_mul(&weights)?;
            out = out.index_add(&ids, &y, 0)?;
        }
        Ok(out)
    }
}

/// Top-k routing over fused experts, with Qwen2-MoE's gated shared expert.
#[derive(Debug, ModuleTree)]
pub struct SparseMoe<P: Projection> {
    /// The router, `[E, H]`.
    #[layer(kind = "router")]
    pub gate: P,
    /// The routed experts.
    pub experts: FusedExperts,
    /// Qwen2-MoE's shared expert, which every token passes through.
    #[expert(shared)]
    pub shared_expert: Option<Mlp<P>>,
    /// Qwen2-MoE's scalar gate on the shared expert, `[1, H]`.
    pub shared_expert_gate: Option<P>,
    #[tree(skip)]
    top_k: usize,
    #[tree(skip)]
    renormalize: bool,
}

impl<P: Projection> Module for SparseMoe<P> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        let x = x.reshape((batch * len, hidden))?;
        let logits = self.gate.forward(&x)?.to_dtype(DType::F32)?;
        let probabilities = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
        let routes = probabilities
            .iter()
            .map(|row| {
                // `torch.topk`: the largest first, the lower index first among equals.
                let mut order: Vec<usize> = (0..row.len()).collect();
                order.sort_by(|&left, &right| {
                    row[right].total_cmp(&row[left]).then(left.cmp(&right))
                });
                order.truncate(self.top_k);
                let total: f32 = order.iter().map(|&expert| row[expert]).sum();
                let norm = if self.renormalize { total } else { 1.0 };
                order
                    .into_iter()
                    .map(|expert| (expert, row[expert] / norm))
                    .collect()
            })
            .collect::<Vec<_>>();
        let mut out = self.experts.forward_routed(&x, &routes)?;
        if let (Some(shared), Some(gate)) = (&self.shared_expert, &self.shared_expert_gate) {
            let weight = candle_nn::ops::sigmoid(&gate.forward(&x)?)?;
            out = (out + shared.forward(&x)?.broadcast_mul(&weight)?)?;
        }
        out.reshape((batch, len, hidden))
    }
}

impl<P: Projection> Module for FeedForward<P> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            FeedForward::Dense(mlp) => mlp.forward(x),
            FeedForward::Sparse(moe) => moe.forward(x),
        }
    }
}

/// The per-expert tensors of one layer (`<prefix>.experts.K.<name>.weight`, names gate, up,
/// down), stacked into the fused banks as transformers 5 fuses them.
///
/// # Errors
///
/// A missing tensor, or widths that do not stack.
pub fn fused_experts(
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    names: [&str; 3],
    experts: usize,
) -> Result<FusedExperts, ModelError> {
    let get = |expert: usize, name: &str| {
        let key = format!("{prefix}.experts.{expert}.{name}.weight");
        tensors
            .get(&key)
            .cloned()
            .ok_or_else(|| ModelError::Config {
                file: "model.safetensors".to_owned(),
                message: format!("missing tensor `{key}`"),
            })
    };
    let [gate, up, down] = names;
    let mut gate_up = Vec::with_capacity(experts);
    let mut downs = Vec::with_capacity(experts);
    for expert in 0..experts {
        gate_up.push(Tensor::cat(&[get(expert, gate)?, get(expert, up)?], 0)?);
        downs.push(get(expert, down)?);
    }
    let bank = |tensors: Vec<Tensor>| -> Result<ExpertBank, ModelError> {
        let stacked = Tensor::stack(&tensors, 0)?;
        ExpertBank::new(stacked).map_err(|error| ModelError::Config {
            file: "model.safetensors".to_owned(),
            message: error.to_string(),
        })
    };
    Ok(FusedExperts {
        gate_up_proj: bank(gate_up)?,
        down_proj: bank(downs)?,
    })
}

impl<P: Projection> MoeForCausalLM<P> {
    /// Loads `config.json` and `model.safetensors` (per-expert keys, as `save_pretrained`
    /// writes them) from a Hugging Face directory, in float32 on `device`.
    ///
    /// # Errors
    ///
    /// Unreadable files, an unsupported config, missing tensors or wrong shapes.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config = MoeConfig::from_file(&dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights).map_err(|source| ModelError::Io {
            file: weights.display().to_string(),
            source,
        })?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let attention = config.attention();
        let rope_base = attention
            .rope_base()
            .map_err(|message| ModelError::Config {
                file: "config.json".to_owned(),
                message,
            })?;
        let (hidden, vocab, eps) = (config.hidden_size, config.vocab_size, config.rms_norm_eps);
        let qkv_bias = config.qkv_bias.unwrap_or(!config.is_mixtral());
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let prefix = format!("model.layers.{index}");
            let vb = vb.pp(&prefix);
            let mlp = if config.is_sparse(index) {
                let (disk, names) = if config.is_mixtral() {
                    ("block_sparse_moe", ["w1", "w3", "w2"])
                } else {
                    ("mlp", ["gate_proj", "up_proj", "down_proj"])
                };
                let moe = vb.pp(disk);
                let experts = fused_experts(
                    &tensors,
                    &format!("{prefix}.{disk}"),
                    names,
                    config.experts(),
                )?;
                if experts.down_proj.in_features() != config.expert_width() {
                    return Err(ModelError::Config {
                        file: "config.json".to_owned(),
                        message: format!(
                            "layer {index}: the experts are {} wide; the config says {}",
                            experts.down_proj.in_features(),
                            config.expert_width()
                        ),
                    });
                }
                let (shared_expert, shared_expert_gate) =
                    match config.shared_expert_intermediate_size {
                        Some(width) => {
                            let mut shared = attention.clone();
                            shared.intermediate_size = width;
                            (
                                Some(Mlp::load(&moe.pp("shared_expert"), &shared)?),
                                Some(P::from(candle_nn::linear_no_bias(
                                    hidden,
                                    1,
                                    moe.pp("shared_expert_gate"),
                                )?)),
                            )
                        }
                        None => (None, None),
                    };
                FeedForward::Sparse(SparseMoe {
                    gate: P::from(candle_nn::linear_no_bias(
                        hidden,
                        config.experts(),
                        moe.pp("gate"),
                    )?),
                    experts,
                    shared_expert,
                    shared_expert_gate,
                    top_k: config.num_experts_per_tok,
                    renormalize: config.is_mixtral() || config.norm_topk_prob.unwrap_or(false),
                })
            } else {
                FeedForward::Dense(Mlp::load(&vb.pp("mlp"), &attention)?)
            };
            layers.push(MoeLayer {
                self_attn: Attention::load_with_bias(
                    &vb.pp("self_attn"),
                    &attention,
                    qkv_bias,
                    false,
                )?,
                mlp,
                input_layernorm: candle_nn::rms_norm(hidden, eps, vb.pp("input_layernorm"))?,
                post_attention_layernorm: candle_nn::rms_norm(
                    hidden,
                    eps,
                    vb.pp("post_attention_layernorm"),
                )?,
            });
        }
        let embed_tokens = candle_nn::embedding(vocab, hidden, vb.pp("model.embed_tokens"))?;
        let lm_head = if vb.contains_tensor("lm_head.weight") || !config.tie_word_embeddings {
            candle_nn::linear_no_bias(hidden, vocab, vb.pp("lm_head"))?
        } else {
            Linear::new(embed_tokens.embeddings().clone(), None)
        };
        Ok(MoeForCausalLM {
            model: MoeModel {
                embed_tokens,
                layers,
                norm: candle_nn::rms_norm(hidden, eps, vb.pp("model.norm"))?,
                rope: Rope::new(rope_base, attention.head_dim()),
            },
            lm_head,
        })
    }

    /// The logits `[len, vocab]` of every position of one token sequence.
    ///
    /// # Errors
    ///
    /// An empty sequence, a token out of range, or a failed tensor operation.
    pub fn forward(&self, tokens: &[u32]) -> candle_core::Result<Tensor> {
        let device = self.lm_head.weight().device();
        let len = tokens.len();
        let ids = Tensor::new(tokens, device)?.unsqueeze(0)?;
        let (cos, sin) = self.model.rope.tables(len, device)?;
        let mask = causal_mask(len, device)?;
        let mut x = self.model.embed_tokens.forward(&ids)?;
        for layer in &self.model.layers {
            let attended = layer.self_attn.forward(
                &layer.input_layernorm.forward_diff(&x)?,
                &cos,
                &sin,
                &mask,
            )?;
            x = (x + attended)?;
            let mixed = layer
                .mlp
                .forward(&layer.post_attention_layernorm.forward_diff(&x)?)?;
            x = (x + mixed)?;
        }
        self.lm_head
            .forward(&self.model.norm.forward_diff(&x)?)?
            .squeeze(0)
    }
}
