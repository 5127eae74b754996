//! The few facts of a transformers `config.json` that confirm what tensor names suggest.
//!
//! A checkpoint's directory usually holds the model's `config.json`. Its architecture names, the
//! vocabulary size (the head's rows), the routed-expert count, the number of decoder layers (the
//! layers past it are multi-token-prediction layers), `tie_word_embeddings` and the
//! quantization method are read; nothing else. A vision-language or audio model nests the
//! language model's facts under `text_config` (or `llm_config`, `language_config`): they are
//! looked up at the top level first, then there. A config that cannot be read is a
//! [`Note`](crate::checkpoint::Note), never an error: the checkpoint is still inspected.

use std::io::Read as _;
use std::path::Path;

use serde_json::Value;

/// The largest `config.json` read: real ones are a few kilobytes.
pub const MAX_CONFIG_LEN: u64 = 16 << 20;

/// What a checkpoint's `config.json` says, as far as inspection needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelConfig {
    /// `architectures` (`["LlamaForCausalLM"]`).
    pub architectures: Vec<String>,
    /// `vocab_size`: the rows of the embedding and of the head.
    pub vocab_size: Option<u64>,
    /// The routed-expert count: `num_local_experts`, `num_experts` or `n_routed_experts`.
    pub experts: Option<u64>,
    /// `num_hidden_layers`: decoder layers at or past it are multi-token-prediction layers.
    pub layers: Option<u64>,
    /// `tie_word_embeddings` as written; `None` when absent.
    pub tie_word_embeddings: Option<bool>,
    /// `quantization_config.quant_method` (`bitsandbytes`, `gptq`, `awq`, `fp8`,
    /// `compressed-tensors`, …), or `mlx` for MLX's `quantization` object.
    pub quantization: Option<String>,
    /// The keys of nested model configs other than the language model's (`vision_config`,
    /// `audio_config`): the model has towers.
    pub sub_models: Vec<String>,
    /// `model_type` (`llama`, `gpt_oss`), the top level's first, then the language model's.
    pub model_type: Option<String>,
}

/// The `model_type`s whose fused experts transformers stores as `[experts, in, out]`: the models
/// whose experts are declared with `@use_experts_implementation(is_transposed=True)`
/// (transformers 5: `modeling_gpt_oss.py`, `modeling_aria.py`,
/// `modeling_openai_privacy_filter.py`). Every other fused bank is `[experts, out, in]`.
const TRANSPOSED_EXPERTS: [&str; 4] = ["gpt_oss", "aria", "aria_text", "openai_privacy_filter"];

const TEXT_CONFIGS: [&str; 3] = ["text_config", "llm_config", "language_config"];

impl ModelConfig {
    /// Reads `config.json` at `path`.
    ///
    /// # Errors
    ///
    /// A message saying why the file could not be used: unreadable, too large, not JSON, not an
    /// object.
    pub fn read(path: &Path) -> Result<ModelConfig, String> {
        let len = std::fs::metadata(path)
            .map_err(|error| error.to_string())?
            .len();
        if len > MAX_CONFIG_LEN {
            return Err(format!("{len} bytes, above the limit of {MAX_CONFIG_LEN}"));
        }
        // Read bounded: a file whose reported length is not its content (`/proc`) stops here.
        let mut text = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_CONFIG_LEN + 1).read_to_end(&mut text))
            .map_err(|error| error.to_string())?;
        if text.len() as u64 > MAX_CONFIG_LEN {
            return Err(format!("more than the limit of {MAX_CONFIG_LEN} bytes"));
        }
        let value: Value = serde_json::from_slice(&text).map_err(|error| error.to_string())?;
        ModelConfig::from_json(&value).ok_or_else(|| "not a JSON object".to_owned())
    }

    /// The facts of a parsed `config.json`; `None` when it is not an object.
    #[must_use]
    pub fn from_json(value: &Value) -> Option<ModelConfig> {
        let top = value.as_object()?;
        let nested: Vec<&serde_json::Map<String, Value>> = TEXT_CONFIGS
            .iter()
            .filter_map(|key| top.get(*key)?.as_object())
            .collect();
        let find = |keys: &[&str]| -> Option<&Value> {
            std::iter::once(top)
                .chain(nested.iter().copied())
                .find_map(|map| {
                    keys.iter()
                        .find_map(|key| map.get(*key).filter(|v| !v.is_null()))
                })
        };
        let architectures = top
            .get("architectures")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let quantization = top
            .get("quantization_config")
            .and_then(|config| config.get("quant_method"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| top.get("quantization").map(|_| "mlx".to_owned()));
        let sub_models = top
            .iter()
            .filter(|(key, value)| {
                key.ends_with("_config")
                    && value.is_object()
                    && !TEXT_CONFIGS.contains(&key.as_str())
                    && !matches!(key.as_str(), "quantization_config" | "rope_scaling_config")
            })
            .map(|(key, _)| key.clone())
            .collect();
        Some(ModelConfig {
            architectures,
            vocab_size: find(&["vocab_size"]).and_then(Value::as_u64),
            experts: find(&["num_local_experts", "num_experts", "n_routed_experts"])
                .and_then(Value::as_u64)
                .filter(|&experts| experts > 0),
            layers: find(&["num_hidden_layers", "n_layer", "num_layers"]).and_then(Value::as_u64),
            tie_word_embeddings: find(&["tie_word_embeddings"]).and_then(Value::as_bool),
            quantization,
            sub_models,
            model_type: find(&["model_type"])
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// Whether the model's fused expert weights are stored `[experts, in, out]` (GPT-OSS, Aria),
    /// the transpose of transformers' usual `[experts, out, in]`; PEFT's `ParamWrapper` reads the
    /// same fact from the experts module's `is_transposed`.
    #[must_use]
    pub fn experts_transposed(&self) -> bool {
        self.model_type
            .as_deref()
            .is_some_and(|model_type| TRANSPOSED_EXPERTS.contains(&model_type))
    }
}
