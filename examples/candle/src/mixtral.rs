//! A Mixtral-shaped mixture of experts with Hugging Face's module paths
//! (`model.layers.0.block_sparse_moe.experts.3.w1`, the router at `block_sparse_moe.gate`).
//!
//! The experts sit under an `#[expert]` field, so `set_linear_is_expert` marks their
//! projections and a target spec can give every expert its own adapter
//! (`experts.<>.w1` selects `w1` of each expert of each layer). Weights come from a small
//! deterministic generator, so the example needs no download.

use std::collections::HashMap;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Embedding, Linear, RmsNorm, VarBuilder};
use moduletree::ModuleTree;

use crate::llama::{Attention, LlamaConfig, Rope, causal_mask, next_token_loss};
use crate::{ModelError, Projection};

/// The sizes of a Mixtral-shaped model.
#[derive(Clone, Copy, Debug)]
pub struct MixtralConfig {
    /// Rows of the embedding table.
    pub vocab_size: usize,
    /// The model width.
    pub hidden_size: usize,
    /// The width of one expert.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Routed experts per layer.
    pub num_local_experts: usize,
    /// Experts each token is routed to.
    pub num_experts_per_tok: usize,
}

impl MixtralConfig {
    /// A tiny configuration: 2 layers of 4 experts, top-2 routing.
    #[must_use]
    pub fn tiny() -> Self {
        MixtralConfig {
            vocab_size: 48,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            num_local_experts: 4,
            num_experts_per_tok: 2,
        }
    }

    fn attention(&self) -> LlamaConfig {
        LlamaConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: Some(self.num_key_value_heads),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: Some(10_000.0),
            rope_parameters: None,
            rope_scaling: None,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
        }
    }

    /// Deterministic pseudo-random weights for every tensor of the model, named as in Hugging
    /// Face checkpoints.
    ///
    /// # Errors
    ///
    /// When the tensors cannot be built on `device`.
    pub fn random_weights(
        &self,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut rng = SplitMix(seed);
        let mut weights = HashMap::new();
        // Values `offset + scale · u` with `u` uniform in [-1, 1).
        let mut add = |name: String, shape: &[usize], scale: f32, offset: f32| {
            let count = shape.iter().product();
            let values: Vec<f32> = (0..count).map(|_| offset + rng.uniform() * scale).collect();
            weights.insert(name, Tensor::from_vec(values, shape, device)?);
            candle_core::Result::Ok(())
        };
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let head_dim = h / self.num_attention_heads;
        let (q, kv) = (
            self.num_attention_heads * head_dim,
            self.num_key_value_heads * head_dim,
        );
        add("model.embed_tokens.weight".to_owned(), &[v, h], 1.0, 0.0)?;
        add("lm_head.weight".to_owned(), &[v, h], 0.3, 0.0)?;
        add("model.norm.weight".to_owned(), &[h], 0.1, 1.0)?;
        for layer in 0..self.num_hidden_layers {
            let prefix = format!("model.layers.{layer}");
            for (name, shape) in [
                ("q_proj", [q, h]),
                ("k_proj", [kv, h]),
                ("v_proj", [kv, h]),
                ("o_proj", [h, q]),
            ] {
                add(
                    format!("{prefix}.self_attn.{name}.weight"),
                    &shape,
                    0.4,
                    0.0,
                )?;
            }
            add(
                format!("{prefix}.block_sparse_moe.gate.weight"),
                &[self.num_local_experts, h],
                0.5,
                0.0,
            )?;
            for expert in 0..self.num_local_experts {
                let expert = format!("{prefix}.block_sparse_moe.experts.{expert}");
                add(format!("{expert}.w1.weight"), &[i, h], 0.3, 0.0)?;
                add(format!("{expert}.w3.weight"), &[i, h], 0.3, 0.0)?;
                add(format!("{expert}.w2.weight"), &[h, i], 0.3, 0.0)?;
            }
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                add(format!("{prefix}.{norm}.weight"), &[h], 0.1, 1.0)?;
            }
        }
        Ok(weights)
    }
}

/// A small deterministic generator (SplitMix64), so that the example's weights are the same on
/// every run.
struct SplitMix(u64);

impl SplitMix {
    /// A value in `[-1, 1)`.
    #[expect(
        clippy::cast_precision_loss,
        reason = "24 random bits fit an f32 exactly"
    )]
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// `MixtralForCausalLM`.
#[derive(Debug, ModuleTree)]
pub struct MixtralForCausalLM<P: Projection> {
    /// The decoder.
    pub model: MixtralModel<P>,
    /// The output head.
    #[layer(kind = "linear", head)]
    pub lm_head: Linear,
}

/// `MixtralModel`.
#[derive(Debug, ModuleTree)]
pub struct MixtralModel<P: Projection> {
    /// The token embeddings.
    pub embed_tokens: Embedding,
    /// The decoder layers.
    #[tree(layers)]
    pub layers: Vec<MixtralLayer<P>>,
    /// The final norm.
    pub norm: RmsNorm,
    #[tree(skip)]
    rope: Rope,
}

/// One decoder layer: attention and a sparse mixture of experts.
#[derive(Debug, ModuleTree)]
pub struct MixtralLayer<P: Projection> {
    /// Self-attention.
    pub self_attn: Attention<P>,
    /// The mixture of experts.
    pub block_sparse_moe: SparseMoe<P>,
    /// The norm before attention.
    pub input_layernorm: RmsNorm,
    /// The norm before the experts.
    pub post_attention_layernorm: RmsNorm,
}

/// Top-k routing over SwiGLU experts.
#[derive(Debug, ModuleTree)]
pub struct SparseMoe<P: Projection> {
    /// The router.
    #[layer(kind = "router")]
    pub gate: Linear,
    /// The routed experts.
    #[expert]
    pub experts: Vec<Expert<P>>,
    #[tree(skip)]
    top_k: usize,
}

/// One expert: `w2(silu(w1(x)) * w3(x))`.
#[derive(Debug, ModuleTree)]
pub struct Expert<P: Projection> {
    /// The gate projection.
    pub w1: P,
    /// The down projection.
    pub w2: P,
    /// The up projection.
    pub w3: P,
}

impl<P: Projection> Module for Expert<P> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.w1.forward(x)?)?;
        self.w2.forward(&(gate * self.w3.forward(x)?)?)
    }
}

impl<P: Projection> Module for SparseMoe<P> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        let x = x.reshape((batch * len, hidden))?;
        let probabilities = candle_nn::ops::softmax_last_dim(&self.gate.forward(&x)?)?;
        let probabilities = probabilities.to_vec2::<f32>()?;
        // Per expert: the tokens routed to it and their renormalised top-k weights.
        let mut routed: Vec<(Vec<u32>, Vec<f32>)> =
            vec![(Vec::new(), Vec::new()); self.experts.len()];
        for (token, row) in probabilities.iter().enumerate() {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&left, &right| row[right].total_cmp(&row[left]));
            let chosen = &order[..self.top_k.min(order.len())];
            let total: f32 = chosen.iter().map(|&expert| row[expert]).sum();
            for &expert in chosen {
                let token = u32::try_from(token).map_err(candle_core::Error::wrap)?;
                routed[expert].0.push(token);
                routed[expert].1.push(row[expert] / total);
            }
        }
        let mut out = x.zeros_like()?;
        for (expert, (tokens, weights)) in self.experts.iter().zip(routed) {
            if tokens.is_empty() {
                continue;
            }
            let count = tokens.len();
            let ids = Tensor::from_vec(tokens, count, x.device())?;
            let weights = Tensor::from_vec(weights, (count, 1), x.device())?;
            let y = expert
                .forward(&x.index_select(&ids, 0)?)?
                .broadcast_mul(&weights)?;
            out = out.index_add(&ids, &y, 0)?;
        }
        out.reshape((batch, len, hidden))
    }
}

impl<P: Projection> MixtralForCausalLM<P> {
    /// Builds the model from tensors named as in Hugging Face checkpoints.
    ///
    /// # Errors
    ///
    /// A missing tensor or a wrong shape.
    pub fn new(vb: &VarBuilder<'_>, config: &MixtralConfig) -> Result<Self, ModelError> {
        let attention = config.attention();
        let (h, v, eps) = (
            config.hidden_size,
            config.vocab_size,
            attention.rms_norm_eps,
        );
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let vb = vb.pp(format!("model.layers.{index}"));
            let moe = vb.pp("block_sparse_moe");
            let experts = (0..config.num_local_experts)
                .map(|expert| {
                    let vb = moe.pp(format!("experts.{expert}"));
                    let (i, h) = (config.intermediate_size, config.hidden_size);
                    Ok(Expert {
                        w1: P::from(candle_nn::linear_no_bias(h, i, vb.pp("w1"))?),
                        w2: P::from(candle_nn::linear_no_bias(i, h, vb.pp("w2"))?),
                        w3: P::from(candle_nn::linear_no_bias(h, i, vb.pp("w3"))?),
                    })
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            layers.push(MixtralLayer {
                self_attn: Attention::load(&vb.pp("self_attn"), &attention)?,
                block_sparse_moe: SparseMoe {
                    gate: candle_nn::linear_no_bias(h, config.num_local_experts, moe.pp("gate"))?,
                    experts,
                    top_k: config.num_experts_per_tok,
                },
                input_layernorm: candle_nn::rms_norm(h, eps, vb.pp("input_layernorm"))?,
                post_attention_layernorm: candle_nn::rms_norm(
                    h,
                    eps,
                    vb.pp("post_attention_layernorm"),
                )?,
            });
        }
        Ok(MixtralForCausalLM {
            model: MixtralModel {
                embed_tokens: candle_nn::embedding(v, h, vb.pp("model.embed_tokens"))?,
                layers,
                norm: candle_nn::rms_norm(h, eps, vb.pp("model.norm"))?,
                rope: Rope::new(10_000.0, attention.head_dim()),
            },
            lm_head: candle_nn::linear_no_bias(h, v, vb.pp("lm_head"))?,
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
            let routed = layer
                .block_sparse_moe
                .forward(&layer.post_attention_layernorm.forward_diff(&x)?)?;
            x = (x + routed)?;
        }
        self.lm_head
            .forward(&self.model.norm.forward_diff(&x)?)?
            .squeeze(0)
    }

    /// The mean cross-entropy of predicting each next token of `tokens`.
    ///
    /// # Errors
    ///
    /// Fewer than two tokens, or a failed tensor operation.
    pub fn next_token_loss(&self, tokens: &[u32]) -> candle_core::Result<Tensor> {
        next_token_loss(tokens, |inputs| self.forward(inputs))
    }
}
