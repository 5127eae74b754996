//! candle-transformers' own Llama and Mixtral, unmodified, run with a PEFT adapter merged into
//! their weights at load ([`PeftWeights`]): LoRA for model code this crate cannot derive on.
//!
//! candle-transformers' models return the logits of the last position; feeding the tokens one at
//! a time through their key-value caches gives every position's, as PyTorch computes them.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, mixtral};
use moduletree::candle::{PeftWeights, Reads};
use serde_json::Value;

/// An error of this module: a message naming the file or option.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The weights of the model directory `model`, with the adapter in `adapter` merged in if any.
fn weights(
    model: &Path,
    adapter: Option<&Path>,
) -> Result<(VarBuilder<'static>, Option<Reads>), Error> {
    let device = Device::Cpu;
    match adapter {
        Some(adapter) => {
            let weights = PeftWeights::load(model, adapter, &device)?;
            let (vb, reads) = weights.var_builder(DType::F32, &device);
            Ok((vb, Some(reads)))
        }
        None => {
            let tensors = candle_core::safetensors::load(model.join("model.safetensors"), &device)?;
            Ok((VarBuilder::from_tensors(tensors, DType::F32, &device), None))
        }
    }
}

/// `config.json` with the fields candle-transformers reads filled in from transformers 5's
/// spelling (`rope_parameters.rope_theta`) and its defaults (no sliding window).
fn config(model: &Path) -> Result<Value, Error> {
    let file = model.join("config.json");
    let text = std::fs::read_to_string(&file)
        .map_err(|error| format!("cannot read `{}`: {error}", file.display()))?;
    let mut config: Value =
        serde_json::from_str(&text).map_err(|error| format!("`{}`: {error}", file.display()))?;
    if config.get("rope_theta").is_none_or(Value::is_null) {
        let theta = config["rope_parameters"]["rope_theta"].clone();
        config["rope_theta"] = if theta.is_null() {
            10_000.0.into()
        } else {
            theta
        };
    }
    if config.get("sliding_window").is_none_or(Value::is_null) {
        config["sliding_window"] = config["max_position_embeddings"].clone();
    }
    config["use_flash_attn"] = false.into();
    Ok(config)
}

/// The logits `[positions, vocab]` of `tokens` through the model in `model` (a Hugging Face
/// directory of a `LlamaForCausalLM` or `MixtralForCausalLM`), with the adapter in `adapter`
/// merged in if any.
///
/// # Errors
///
/// An unreadable or unknown config, any [`PeftError`](moduletree::peft::PeftError) of the merge,
/// a weight the model does not read, or a failing tensor operation.
pub fn logits(model: &Path, adapter: Option<&Path>, tokens: &[u32]) -> Result<Tensor, Error> {
    let config = config(model)?;
    let (vb, reads) = weights(model, adapter)?;
    let device = Device::Cpu;
    let mut rows = Vec::with_capacity(tokens.len());
    match config["model_type"].as_str() {
        Some("llama") => {
            let config: llama::LlamaConfig = serde_json::from_value(config)?;
            let config = config.into_config(false);
            let model = llama::Llama::load(vb, &config)?;
            let mut cache = llama::Cache::new(true, DType::F32, &config, &device)?;
            for (position, token) in tokens.iter().enumerate() {
                let input = Tensor::new(&[[*token]], &device)?;
                rows.push(model.forward(&input, position, &mut cache)?.squeeze(0)?);
            }
        }
        Some("mixtral") => {
            let config: mixtral::Config = serde_json::from_value(config)?;
            let mut model = mixtral::Model::new(&config, vb)?;
            for (position, token) in tokens.iter().enumerate() {
                let input = Tensor::new(&[[*token]], &device)?;
                rows.push(model.forward(&input, position)?.squeeze(0)?.squeeze(0)?);
            }
        }
        other => {
            return Err(format!(
                "`{}`: model_type {other:?} is not one this example runs; expected \"llama\" or \"mixtral\"",
                model.join("config.json").display()
            )
            .into());
        }
    }
    if let Some(reads) = reads {
        reads.finish()?;
    }
    Ok(Tensor::stack(&rows, 0)?)
}
