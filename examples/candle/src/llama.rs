//! A small Llama: RMSNorm, rotary position embeddings, grouped-query attention, SwiGLU MLP.
//!
//! Module paths equal Hugging Face's `LlamaForCausalLM` (`model.layers.0.self_attn.q_proj`,
//! `lm_head`, marked as the head), so PEFT adapters trained on the Python model load by name.
//! [`LlamaForCausalLM::load`] reads a model directory as `save_pretrained` writes it:
//! `config.json` (transformers 4.x's `rope_theta` or 5.x's `rope_parameters`) and
//! `model.safetensors`, with tied embeddings or a separate `lm_head.weight`.

use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, RmsNorm, VarBuilder};
use moduletree::ModuleTree;
use serde::Deserialize;

use crate::{ModelError, Projection};

/// The fields of a Hugging Face Llama `config.json` that the model uses.
#[derive(Clone, Debug, Deserialize)]
pub struct LlamaConfig {
    /// Rows of the embedding table.
    pub vocab_size: usize,
    /// The model width.
    pub hidden_size: usize,
    /// The MLP width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to `num_attention_heads`.
    pub num_key_value_heads: Option<usize>,
    /// Width of a head; defaults to `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base frequency, as transformers 4.x writes it.
    pub rope_theta: Option<f64>,
    /// RoPE settings, as transformers 5.x writes them.
    pub rope_parameters: Option<serde_json::Value>,
    /// RoPE scaling of transformers 4.x; only `null` is supported.
    pub rope_scaling: Option<serde_json::Value>,
    /// The head reuses the embedding table.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on the attention projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
}

fn default_eps() -> f64 {
    1e-6
}

impl LlamaConfig {
    /// Reads and checks `config.json`.
    ///
    /// # Errors
    ///
    /// Unreadable or malformed files, and RoPE scaling other than the default.
    pub fn from_file(file: &Path) -> Result<Self, ModelError> {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|source| ModelError::Io {
            file: name.clone(),
            source,
        })?;
        let config: LlamaConfig =
            serde_json::from_str(&text).map_err(|error| ModelError::Config {
                file: name.clone(),
                message: error.to_string(),
            })?;
        config.rope_base().map_err(|message| ModelError::Config {
            file: name,
            message,
        })?;
        Ok(config)
    }

    /// The RoPE base: `rope_theta` (4.x) or `rope_parameters.rope_theta` (5.x), else 10000.
    ///
    /// # Errors
    ///
    /// A RoPE type other than `"default"`.
    pub fn rope_base(&self) -> Result<f64, String> {
        if let Some(scaling) = self.rope_scaling.as_ref().filter(|value| !value.is_null()) {
            return Err(format!(
                "unsupported `rope_scaling` {scaling}; expected null"
            ));
        }
        if let Some(parameters) = &self.rope_parameters {
            let kind = parameters.get("rope_type").and_then(|kind| kind.as_str());
            if kind.is_some_and(|kind| kind != "default") {
                return Err(format!(
                    "unsupported `rope_parameters.rope_type` {kind:?}; expected \"default\""
                ));
            }
            if let Some(theta) = parameters
                .get("rope_theta")
                .and_then(serde_json::Value::as_f64)
            {
                return Ok(theta);
            }
        }
        Ok(self.rope_theta.unwrap_or(10_000.0))
    }

    /// The head width.
    #[must_use]
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The number of key/value heads.
    #[must_use]
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
}

/// `LlamaForCausalLM`: the decoder and the output head.
#[derive(Debug, ModuleTree)]
pub struct LlamaForCausalLM<P: Projection> {
    /// The decoder.
    pub model: LlamaModel<P>,
    /// The output head, left out of `all-linear`.
    #[layer(kind = "linear", head)]
    pub lm_head: Linear,
}

/// `LlamaModel`: embeddings, decoder layers, final norm.
#[derive(Debug, ModuleTree)]
pub struct LlamaModel<P: Projection> {
    /// The token embeddings.
    pub embed_tokens: Embedding,
    /// The decoder layers.
    #[tree(layers)]
    pub layers: Vec<DecoderLayer<P>>,
    /// The final norm.
    pub norm: RmsNorm,
    #[tree(skip)]
    rope: Rope,
}

/// One decoder layer.
#[derive(Debug, ModuleTree)]
pub struct DecoderLayer<P: Projection> {
    /// Self-attention.
    pub self_attn: Attention<P>,
    /// The SwiGLU MLP.
    pub mlp: Mlp<P>,
    /// The norm before attention.
    pub input_layernorm: RmsNorm,
    /// The norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

/// Grouped-query self-attention with rotary position embeddings.
#[derive(Debug, ModuleTree)]
pub struct Attention<P: Projection> {
    /// Queries.
    pub q_proj: P,
    /// Keys.
    pub k_proj: P,
    /// Values.
    pub v_proj: P,
    /// Output.
    pub o_proj: P,
    #[tree(skip)]
    heads: Heads,
}

/// The head counts of an attention layer.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// Query heads.
    pub query: usize,
    /// Key/value heads.
    pub kv: usize,
    /// Width of a head.
    pub dim: usize,
}

/// The SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, ModuleTree)]
pub struct Mlp<P: Projection> {
    /// The gate projection.
    pub gate_proj: P,
    /// The up projection.
    pub up_proj: P,
    /// The down projection.
    pub down_proj: P,
}

/// The cos/sin tables of rotary position embeddings.
#[derive(Clone, Debug)]
pub struct Rope {
    base: f64,
    dim: usize,
}

impl Rope {
    /// Tables for rotary embeddings of head width `dim` with base `base`.
    #[must_use]
    pub fn new(base: f64, dim: usize) -> Self {
        Rope { base, dim }
    }

    /// `(cos, sin)`, each `[len, dim / 2]`, for positions `0..len`.
    ///
    /// # Errors
    ///
    /// When the tensors cannot be built on `device`.
    #[expect(clippy::cast_precision_loss, reason = "positions and widths are small")]
    pub fn tables(&self, len: usize, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.dim / 2;
        // As transformers: inv_freq in float32 from an integer range.
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (self.base as f32).powf((2 * i) as f32 / self.dim as f32))
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let positions: Vec<f32> = (0..len).map(|position| position as f32).collect();
        let positions = Tensor::from_vec(positions, (len, 1), device)?;
        let freqs = positions.matmul(&inv_freq)?;
        Ok((freqs.cos()?, freqs.sin()?))
    }
}

impl<P: Projection> Attention<P> {
    /// Builds the layer from `vb` (`q_proj.weight`, …).
    ///
    /// # Errors
    ///
    /// A missing tensor or a wrong shape.
    pub fn load(vb: &VarBuilder<'_>, config: &LlamaConfig) -> candle_core::Result<Self> {
        Self::load_with_bias(vb, config, config.attention_bias, config.attention_bias)
    }

    /// Builds the layer with biases on `q`/`k`/`v` and on `o` as given (Qwen2 has them on
    /// `q`/`k`/`v` only).
    ///
    /// # Errors
    ///
    /// A missing tensor or a wrong shape.
    pub fn load_with_bias(
        vb: &VarBuilder<'_>,
        config: &LlamaConfig,
        qkv_bias: bool,
        o_bias: bool,
    ) -> candle_core::Result<Self> {
        let heads = Heads {
            query: config.num_attention_heads,
            kv: config.kv_heads(),
            dim: config.head_dim(),
        };
        let hidden = config.hidden_size;
        let proj = |name: &str, input: usize, output: usize, bias: bool| {
            candle_nn::linear_b(input, output, bias, vb.pp(name)).map(P::from)
        };
        Ok(Attention {
            q_proj: proj("q_proj", hidden, heads.query * heads.dim, qkv_bias)?,
            k_proj: proj("k_proj", hidden, heads.kv * heads.dim, qkv_bias)?,
            v_proj: proj("v_proj", hidden, heads.kv * heads.dim, qkv_bias)?,
            o_proj: proj("o_proj", heads.query * heads.dim, hidden, o_bias)?,
            heads,
        })
    }

    /// Attention over `x: [batch, len, hidden]` with a causal `mask: [len, len]`.
    ///
    /// # Errors
    ///
    /// When a tensor operation fails.
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (batch, len, _) = x.dims3()?;
        let Heads { query, kv, dim } = self.heads;
        let split = |y: Tensor, heads: usize| {
            y.reshape((batch, len, heads, dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q_proj.forward(x)?, query)?;
        let k = split(self.k_proj.forward(x)?, kv)?;
        let v = split(self.v_proj.forward(x)?, kv)?;
        // The differentiable forms of RoPE, RMSNorm and softmax: candle's fused kernels have no
        // backward pass, and the adapters are trained through this code.
        let q = candle_nn::rotary_emb::rope_slow(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope_slow(&k, cos, sin)?;
        let repeat = |y: Tensor| -> candle_core::Result<Tensor> {
            let groups = query / kv;
            if groups == 1 {
                return Ok(y);
            }
            y.unsqueeze(2)?
                .expand((batch, kv, groups, len, dim))?
                .reshape((batch, query, len, dim))
        };
        let (k, v) = (repeat(k)?, repeat(v)?);
        #[expect(clippy::cast_precision_loss, reason = "head widths are small")]
        let scale = 1.0 / (dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(mask)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, len, query * dim))?;
        self.o_proj.forward(&out)
    }
}

impl<P: Projection> Mlp<P> {
    /// Builds the MLP from `vb` (`gate_proj.weight`, …).
    ///
    /// # Errors
    ///
    /// A missing tensor or a wrong shape.
    pub fn load(vb: &VarBuilder<'_>, config: &LlamaConfig) -> candle_core::Result<Self> {
        let (hidden, inner, bias) = (
            config.hidden_size,
            config.intermediate_size,
            config.mlp_bias,
        );
        let proj = |name: &str, input: usize, output: usize| {
            candle_nn::linear_b(input, output, bias, vb.pp(name)).map(P::from)
        };
        Ok(Mlp {
            gate_proj: proj("gate_proj", hidden, inner)?,
            up_proj: proj("up_proj", hidden, inner)?,
            down_proj: proj("down_proj", inner, hidden)?,
        })
    }
}

impl<P: Projection> Module for Mlp<P> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate_proj.forward(x)?)?;
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

/// A causal mask `[len, len]`: 0 on and below the diagonal, −∞ above.
///
/// # Errors
///
/// When the tensor cannot be built on `device`.
pub fn causal_mask(len: usize, device: &Device) -> candle_core::Result<Tensor> {
    let values: Vec<f32> = (0..len)
        .flat_map(|row| (0..len).map(move |col| if col > row { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (len, len), device)
}

impl<P: Projection> DecoderLayer<P> {
    fn load(vb: &VarBuilder<'_>, config: &LlamaConfig) -> candle_core::Result<Self> {
        let (hidden, eps) = (config.hidden_size, config.rms_norm_eps);
        Ok(DecoderLayer {
            self_attn: Attention::load(&vb.pp("self_attn"), config)?,
            mlp: Mlp::load(&vb.pp("mlp"), config)?,
            input_layernorm: candle_nn::rms_norm(hidden, eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: candle_nn::rms_norm(
                hidden,
                eps,
                vb.pp("post_attention_layernorm"),
            )?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let attended =
            self.self_attn
                .forward(&self.input_layernorm.forward_diff(x)?, cos, sin, mask)?;
        let x = (x + attended)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward_diff(&x)?)?;
        x + mlp
    }
}

impl<P: Projection> LlamaForCausalLM<P> {
    /// Builds the model from tensors named as in Hugging Face checkpoints.
    ///
    /// # Errors
    ///
    /// A missing tensor or a wrong shape, or a config this model does not support.
    pub fn new(vb: &VarBuilder<'_>, config: &LlamaConfig) -> Result<Self, ModelError> {
        let rope_base = config.rope_base().map_err(|message| ModelError::Config {
            file: "config.json".to_owned(),
            message,
        })?;
        let (vocab, hidden) = (config.vocab_size, config.hidden_size);
        let embed_tokens = candle_nn::embedding(vocab, hidden, vb.pp("model.embed_tokens"))?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| DecoderLayer::load(&vb.pp(format!("model.layers.{index}")), config))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = candle_nn::rms_norm(hidden, config.rms_norm_eps, vb.pp("model.norm"))?;
        let lm_head = if vb.contains_tensor("lm_head.weight") || !config.tie_word_embeddings {
            candle_nn::linear_no_bias(hidden, vocab, vb.pp("lm_head"))?
        } else {
            Linear::new(embed_tokens.embeddings().clone(), None)
        };
        Ok(LlamaForCausalLM {
            model: LlamaModel {
                embed_tokens,
                layers,
                norm,
                rope: Rope::new(rope_base, config.head_dim()),
            },
            lm_head,
        })
    }

    /// Loads `config.json` and `model.safetensors` from a Hugging Face model directory, in
    /// float32 on `device`.
    ///
    /// # Errors
    ///
    /// Unreadable files, an unsupported config, missing tensors or wrong shapes.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights).map_err(|source| ModelError::Io {
            file: weights.display().to_string(),
            source,
        })?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(&vb, &config)
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
            x = layer.forward(&x, &cos, &sin, &mask)?;
        }
        let x = self.model.norm.forward_diff(&x)?;
        self.lm_head.forward(&x)?.squeeze(0)
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

/// The mean cross-entropy of the logits `forward` gives for all but the last token against the
/// tokens that follow them.
///
/// # Errors
///
/// Fewer than two tokens, or a failed tensor operation.
pub fn next_token_loss(
    tokens: &[u32],
    forward: impl FnOnce(&[u32]) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let Some((_, targets)) = tokens.split_first() else {
        candle_core::bail!("next_token_loss needs at least two tokens");
    };
    let logits = forward(&tokens[..tokens.len() - 1])?;
    let targets = Tensor::new(targets, logits.device())?;
    candle_nn::loss::cross_entropy(&logits, &targets)
}

/// The index of the largest value of each row of `[len, vocab]` logits.
///
/// # Errors
///
/// When `logits` is not a matrix.
pub fn argmax_rows(logits: &Tensor) -> candle_core::Result<Vec<u32>> {
    logits.argmax(D::Minus1)?.to_vec1::<u32>()
}
