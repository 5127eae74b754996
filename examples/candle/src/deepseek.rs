//! DeepSeek-V3 as transformers 5 holds it (`modeling_deepseek_v3.py`): multi-head latent
//! attention (MLA) with interleaved rotary embeddings, the first `first_k_dense_replace` layers
//! dense, then routed experts fused in [`ExpertBank`](moduletree::candle::ExpertBank)s beside one shared expert MLP (typed
//! `#[expert(shared)]`).
//!
//! The router scores experts with a sigmoid, picks among the `topk_group` best groups (a group's
//! score is the sum of its two best biased scores, the bias `e_score_correction_bias` only
//! choosing), takes the top `k` biased scores of those, weights them by their unbiased scores
//! (renormalised when `norm_topk_prob`), and scales by `routed_scaling_factor`.

use std::path::Path;

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, Linear, RmsNorm, VarBuilder};
use moduletree::ModuleTree;
use serde::Deserialize;

use crate::llama::{LlamaConfig, Mlp, causal_mask};
use crate::moe::{FusedExperts, fused_experts};
use crate::{ModelError, Projection};

/// The fields of a DeepSeek-V3 `config.json` that the model uses.
#[derive(Clone, Debug, Deserialize)]
pub struct DeepseekV3Config {
    /// Rows of the embedding table.
    pub vocab_size: usize,
    /// The model width.
    pub hidden_size: usize,
    /// The dense MLPs' width.
    pub intermediate_size: usize,
    /// Each routed expert's width.
    pub moe_intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Rank of the query's low-rank projection.
    pub q_lora_rank: Option<usize>,
    /// Rank of the compressed key/value latent.
    pub kv_lora_rank: usize,
    /// Each head's query/key width without rotary embedding.
    pub qk_nope_head_dim: usize,
    /// Each head's query/key width with rotary embedding.
    pub qk_rope_head_dim: usize,
    /// Each head's value width.
    pub v_head_dim: usize,
    /// Routed experts.
    pub n_routed_experts: usize,
    /// Shared experts (their widths add up in one MLP).
    pub n_shared_experts: usize,
    /// Experts each token is routed to.
    pub num_experts_per_tok: usize,
    /// Expert groups.
    pub n_group: usize,
    /// Groups a token may be routed into.
    pub topk_group: usize,
    /// Whether the top-k weights are renormalised.
    pub norm_topk_prob: bool,
    /// The routed experts' output scale.
    pub routed_scaling_factor: f64,
    /// The first this many layers are dense.
    pub first_k_dense_replace: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Whether rotary dimensions come in interleaved pairs.
    #[serde(default = "yes")]
    pub rope_interleave: bool,
    /// RoPE settings (transformers 5).
    pub rope_parameters: Option<serde_json::Value>,
    /// RoPE base (transformers 4).
    pub rope_theta: Option<f64>,
    /// The head reuses the embedding table.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn yes() -> bool {
    true
}

impl DeepseekV3Config {
    fn mlp(&self, width: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: width,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: None,
            head_dim: Some(self.qk_rope_head_dim),
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

/// Multi-head latent attention.
#[derive(Debug, ModuleTree)]
pub struct LatentAttention<P: Projection> {
    /// The query's down-projection.
    pub q_a_proj: P,
    /// The norm of the query latent.
    pub q_a_layernorm: RmsNorm,
    /// The query's up-projection.
    pub q_b_proj: P,
    /// The key/value latent and the shared rotary key.
    pub kv_a_proj_with_mqa: P,
    /// The norm of the key/value latent.
    pub kv_a_layernorm: RmsNorm,
    /// The keys' and values' up-projection.
    pub kv_b_proj: P,
    /// The output.
    pub o_proj: P,
    #[tree(skip)]
    dims: Dims,
}

#[derive(Clone, Copy, Debug)]
struct Dims {
    heads: usize,
    nope: usize,
    rope: usize,
    value: usize,
    kv_rank: usize,
    interleave: bool,
}

impl<P: Projection> LatentAttention<P> {
    fn load(vb: &VarBuilder<'_>, config: &DeepseekV3Config) -> Result<Self, ModelError> {
        let q_rank = config.q_lora_rank.ok_or_else(|| ModelError::Config {
            file: "config.json".to_owned(),
            message: "`q_lora_rank: null` (a plain q_proj) is not supported".to_owned(),
        })?;
        let dims = Dims {
            heads: config.num_attention_heads,
            nope: config.qk_nope_head_dim,
            rope: config.qk_rope_head_dim,
            value: config.v_head_dim,
            kv_rank: config.kv_lora_rank,
            interleave: config.rope_interleave,
        };
        let (hidden, eps) = (config.hidden_size, config.rms_norm_eps);
        let proj = |name: &str, input: usize, output: usize| {
            candle_nn::linear_no_bias(input, output, vb.pp(name)).map(P::from)
        };
        Ok(LatentAttention {
            q_a_proj: proj("q_a_proj", hidden, q_rank)?,
            q_a_layernorm: candle_nn::rms_norm(q_rank, eps, vb.pp("q_a_layernorm"))?,
            q_b_proj: proj("q_b_proj", q_rank, dims.heads * (dims.nope + dims.rope))?,
            kv_a_proj_with_mqa: proj("kv_a_proj_with_mqa", hidden, dims.kv_rank + dims.rope)?,
            kv_a_layernorm: candle_nn::rms_norm(dims.kv_rank, eps, vb.pp("kv_a_layernorm"))?,
            kv_b_proj: proj(
                "kv_b_proj",
                dims.kv_rank,
                dims.heads * (dims.nope + dims.value),
            )?,
            o_proj: proj("o_proj", dims.heads * dims.value, hidden)?,
            dims,
        })
    }

    /// Rotary embedding of `x: [b, h, s, rope]` with `cos`/`sin: [s, rope / 2]`.
    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let (b, h, s, rope) = x.dims4()?;
        let half = rope / 2;
        let (first, second) = if self.dims.interleave {
            // Pairs (x0, x1), (x2, x3), …: even and odd positions.
            let pairs = x.reshape((b, h, s, half, 2))?;
            (pairs.i((.., .., .., .., 0))?, pairs.i((.., .., .., .., 1))?)
        } else {
            (
                x.narrow(D::Minus1, 0, half)?,
                x.narrow(D::Minus1, half, half)?,
            )
        };
        let cos = cos.reshape((1, 1, s, half))?;
        let sin = sin.reshape((1, 1, s, half))?;
        let one = (first.broadcast_mul(&cos)? - second.broadcast_mul(&sin)?)?;
        let two = (second.broadcast_mul(&cos)? + first.broadcast_mul(&sin)?)?;
        Tensor::cat(&[one, two], D::Minus1)
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let Dims {
            heads,
            nope,
            rope,
            value,
            kv_rank,
            ..
        } = self.dims;
        let q = self
            .q_b_proj
            .forward(
                &self
                    .q_a_layernorm
                    .forward_diff(&self.q_a_proj.forward(x)?)?,
            )?
            .reshape((b, s, heads, nope + rope))?
            .transpose(1, 2)?;
        let q_pass = q.narrow(D::Minus1, 0, nope)?;
        let q_rot = self.rotate(&q.narrow(D::Minus1, nope, rope)?.contiguous()?, cos, sin)?;
        let compressed = self.kv_a_proj_with_mqa.forward(x)?;
        let kv_latent =
            self.kv_a_layernorm
                .forward_diff(&compressed.narrow(D::Minus1, 0, kv_rank)?)?;
        let k_rot = compressed
            .narrow(D::Minus1, kv_rank, rope)?
            .reshape((b, 1, s, rope))?
            .contiguous()?;
        let k_rot = self.rotate(&k_rot, cos, sin)?;
        let kv = self
            .kv_b_proj
            .forward(&kv_latent)?
            .reshape((b, s, heads, nope + value))?
            .transpose(1, 2)?;
        let k_nope = kv.narrow(D::Minus1, 0, nope)?;
        let v = kv.narrow(D::Minus1, nope, value)?.contiguous()?;
        let q = Tensor::cat(&[q_pass, q_rot], D::Minus1)?.contiguous()?;
        let k = Tensor::cat(
            &[k_nope, k_rot.broadcast_as((b, heads, s, rope))?],
            D::Minus1,
        )?
        .contiguous()?;
        #[expect(clippy::cast_precision_loss, reason = "head widths are small")]
        let scale = 1.0 / ((nope + rope) as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(mask)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, s, heads * value))?;
        self.o_proj.forward(&out)
    }
}

/// DeepSeek-V3's router: sigmoid scores, a bias that only chooses, group-limited top-k.
#[derive(Debug, ModuleTree)]
#[layer(kind = "router")]
pub struct TopkRouter {
    weight: Tensor,
    e_score_correction_bias: Vec<f32>,
    top_k: usize,
    groups: usize,
    top_groups: usize,
    normalize: bool,
    scale: f32,
}

impl TopkRouter {
    /// Per token, the chosen experts and their weights.
    fn route(&self, x: &Tensor) -> candle_core::Result<Vec<Vec<(usize, f32)>>> {
        let logits = x.to_dtype(DType::F32)?.matmul(&self.weight.t()?)?;
        let scores = candle_nn::ops::sigmoid(&logits)?.to_vec2::<f32>()?;
        let experts = self.e_score_correction_bias.len();
        let per_group = experts / self.groups.max(1);
        let descending =
            |values: &[f32], a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
        Ok(scores
            .iter()
            .map(|row| {
                let biased: Vec<f32> = row
                    .iter()
                    .zip(&self.e_score_correction_bias)
                    .map(|(score, bias)| score + bias)
                    .collect();
                let group_scores: Vec<f32> = (0..self.groups)
                    .map(|group| {
                        let mut members: Vec<f32> =
                            biased[group * per_group..(group + 1) * per_group].to_vec();
                        members.sort_by(|a, b| b.total_cmp(a));
                        members.iter().take(2).sum()
                    })
                    .collect();
                let mut group_order: Vec<usize> = (0..self.groups).collect();
                group_order.sort_by(|a, b| descending(&group_scores, a, b));
                let kept = &group_order[..self.top_groups.min(self.groups)];
                let mut candidates: Vec<usize> = (0..experts)
                    .filter(|expert| kept.contains(&(expert / per_group.max(1))))
                    .collect();
                candidates.sort_by(|a, b| descending(&biased, a, b));
                candidates.truncate(self.top_k);
                let total: f32 = candidates.iter().map(|&expert| row[expert]).sum::<f32>() + 1e-20;
                candidates
                    .into_iter()
                    .map(|expert| {
                        let weight = if self.normalize {
                            row[expert] / total
                        } else {
                            row[expert]
                        };
                        (expert, weight * self.scale)
                    })
                    .collect()
            })
            .collect())
    }
}

/// The routed experts and the shared expert of one layer.
#[derive(Debug, ModuleTree)]
pub struct DeepseekMoe<P: Projection> {
    /// The router.
    pub gate: TopkRouter,
    /// The routed experts, fused.
    pub experts: FusedExperts,
    /// The shared expert, which every token passes through.
    #[expert(shared)]
    pub shared_experts: Mlp<P>,
}

impl<P: Projection> Module for DeepseekMoe<P> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        let flat = x.reshape((batch * len, hidden))?;
        let routes = self.gate.route(&flat)?;
        let out = self.experts.forward_routed(&flat, &routes)?;
        out.reshape((batch, len, hidden))? + self.shared_experts.forward(x)?
    }
}

/// A dense MLP or the experts; the variant adds no path segment.
#[derive(Debug, ModuleTree)]
pub enum DeepseekFeedForward<P: Projection> {
    /// The first layers' MLP.
    Dense(Mlp<P>),
    /// Routed and shared experts.
    Sparse(Box<DeepseekMoe<P>>),
}

/// One decoder layer.
#[derive(Debug, ModuleTree)]
pub struct DeepseekLayer<P: Projection> {
    /// Multi-head latent attention.
    pub self_attn: LatentAttention<P>,
    /// The feed-forward block.
    pub mlp: DeepseekFeedForward<P>,
    /// The norm before attention.
    pub input_layernorm: RmsNorm,
    /// The norm before the feed-forward block.
    pub post_attention_layernorm: RmsNorm,
}

/// The decoder.
#[derive(Debug, ModuleTree)]
pub struct DeepseekModel<P: Projection> {
    /// The token embeddings.
    pub embed_tokens: Embedding,
    /// The decoder layers.
    #[tree(layers)]
    pub layers: Vec<DeepseekLayer<P>>,
    /// The final norm.
    pub norm: RmsNorm,
    #[tree(skip)]
    rope: (f64, usize),
}

/// `DeepseekV3ForCausalLM`.
#[derive(Debug, ModuleTree)]
pub struct DeepseekV3ForCausalLM<P: Projection> {
    /// The decoder.
    pub model: DeepseekModel<P>,
    /// The output head.
    #[layer(kind = "linear", head)]
    pub lm_head: Linear,
}

impl<P: Projection> DeepseekV3ForCausalLM<P> {
    /// Loads `config.json` and `model.safetensors` (per-expert keys, as `save_pretrained` writes
    /// them) from a Hugging Face directory, in float32 on `device`.
    ///
    /// # Errors
    ///
    /// Unreadable files, an unsupported config, missing tensors or wrong shapes.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let file = dir.join("config.json");
        let text = std::fs::read_to_string(&file).map_err(|source| ModelError::Io {
            file: file.display().to_string(),
            source,
        })?;
        let config: DeepseekV3Config =
            serde_json::from_str(&text).map_err(|error| ModelError::Config {
                file: file.display().to_string(),
                message: error.to_string(),
            })?;
        let weights = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights).map_err(|source| ModelError::Io {
            file: weights.display().to_string(),
            source,
        })?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let rope_base = config
            .mlp(config.intermediate_size)
            .rope_base()
            .map_err(|message| ModelError::Config {
                file: "config.json".to_owned(),
                message,
            })?;
        let (hidden, eps) = (config.hidden_size, config.rms_norm_eps);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let prefix = format!("model.layers.{index}");
            let vb = vb.pp(&prefix);
            let mlp = if index < config.first_k_dense_replace {
                DeepseekFeedForward::Dense(Mlp::load(
                    &vb.pp("mlp"),
                    &config.mlp(config.intermediate_size),
                )?)
            } else {
                let moe = vb.pp("mlp");
                let bias = moe
                    .get(config.n_routed_experts, "gate.e_score_correction_bias")?
                    .to_vec1::<f32>()?;
                DeepseekFeedForward::Sparse(Box::new(DeepseekMoe {
                    gate: TopkRouter {
                        weight: moe.get((config.n_routed_experts, hidden), "gate.weight")?,
                        e_score_correction_bias: bias,
                        top_k: config.num_experts_per_tok,
                        groups: config.n_group,
                        top_groups: config.topk_group,
                        normalize: config.norm_topk_prob,
                        #[expect(clippy::cast_possible_truncation, reason = "a small scale")]
                        scale: config.routed_scaling_factor as f32,
                    },
                    experts: fused_experts(
                        &tensors,
                        &format!("{prefix}.mlp"),
                        ["gate_proj", "up_proj", "down_proj"],
                        config.n_routed_experts,
                    )?,
                    shared_experts: Mlp::load(
                        &moe.pp("shared_experts"),
                        &config.mlp(config.moe_intermediate_size * config.n_shared_experts),
                    )?,
                }))
            };
            layers.push(DeepseekLayer {
                self_attn: LatentAttention::load(&vb.pp("self_attn"), &config)?,
                mlp,
                input_layernorm: candle_nn::rms_norm(hidden, eps, vb.pp("input_layernorm"))?,
                post_attention_layernorm: candle_nn::rms_norm(
                    hidden,
                    eps,
                    vb.pp("post_attention_layernorm"),
                )?,
            });
        }
        let embed_tokens =
            candle_nn::embedding(config.vocab_size, hidden, vb.pp("model.embed_tokens"))?;
        let lm_head = if vb.contains_tensor("lm_head.weight") || !config.tie_word_embeddings {
            candle_nn::linear_no_bias(hidden, config.vocab_size, vb.pp("lm_head"))?
        } else {
            Linear::new(embed_tokens.embeddings().clone(), None)
        };
        Ok(DeepseekV3ForCausalLM {
            model: DeepseekModel {
                embed_tokens,
                layers,
                norm: candle_nn::rms_norm(hidden, eps, vb.pp("model.norm"))?,
                rope: (rope_base, config.qk_rope_head_dim),
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
        let (base, dim) = self.model.rope;
        let (cos, sin) = crate::llama::Rope::new(base, dim).tables(len, device)?;
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
            let normed = layer.post_attention_layernorm.forward_diff(&x)?;
            let mixed = match &layer.mlp {
                DeepseekFeedForward::Dense(mlp) => mlp.forward(&normed)?,
                DeepseekFeedForward::Sparse(moe) => moe.forward(&normed)?,
            };
            x = (x + mixed)?;
        }
        self.lm_head
            .forward(&self.model.norm.forward_diff(&x)?)?
            .squeeze(0)
    }
}
