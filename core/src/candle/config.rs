//! PEFT's `adapter_config.json` for LoRA, read and written.
//!
//! [`LoraConfig`] holds the fields this crate reads (rank, alpha, rsLoRA, dropout, the patterns)
//! and the options it refuses (DoRA, `target_parameters`, biases, …); every other field of the
//! file is kept as it was and written back. Written files have PEFT's layout: keys sorted, two
//! spaces of indent, an integral `lora_alpha` as an integer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::target::{PeftConfigError, TargetSpec};

/// PEFT's `target_modules` (and `exclude_modules`): a list of module names, or one regex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Names matched exactly or as a dotted suffix (`q_proj` matches `model.layers.0.q_proj`).
    List(Vec<String>),
    /// A regex that must match the whole module path.
    Regex(String),
}

/// A LoRA `adapter_config.json` as PEFT writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    /// `"LORA"`.
    pub peft_type: String,
    /// The default rank.
    pub r: usize,
    /// The default alpha; the scale is `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    #[serde(serialize_with = "number")]
    pub lora_alpha: f64,
    /// Dropout on the adapter's input while training.
    pub lora_dropout: f64,
    /// Scale by `alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
    /// Weight-decomposed LoRA; not supported.
    pub use_dora: bool,
    /// `"none"`; trained biases are not supported.
    pub bias: String,
    /// A bias on `lora_B`; not supported.
    pub lora_bias: bool,
    /// Weights stored `[in, out]` (GPT-2's `Conv1D`); not supported.
    pub fan_in_fan_out: bool,
    /// The modules adapted.
    pub target_modules: Option<TargetModules>,
    /// The modules left out.
    pub exclude_modules: Option<TargetModules>,
    /// Parameters adapted directly (PEFT's `target_parameters`); not supported.
    pub target_parameters: Option<Vec<String>>,
    /// Ranks per module-name pattern, overriding `r`.
    pub rank_pattern: BTreeMap<String, usize>,
    /// Alphas per module-name pattern, overriding `lora_alpha`.
    #[serde(serialize_with = "number_map")]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Modules trained and saved whole; not supported.
    pub modules_to_save: Option<Vec<String>>,
    /// The base model the adapter was trained on.
    pub base_model_name_or_path: Option<String>,
    /// PEFT's task type (`"CAUSAL_LM"`, …).
    pub task_type: Option<String>,
    /// Saved adapters are written with `true`.
    pub inference_mode: bool,
    /// Every other field of the file, kept as read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            peft_type: "LORA".to_owned(),
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            use_rslora: false,
            use_dora: false,
            bias: "none".to_owned(),
            lora_bias: false,
            fan_in_fan_out: false,
            target_modules: None,
            exclude_modules: None,
            target_parameters: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            modules_to_save: None,
            base_model_name_or_path: None,
            task_type: None,
            inference_mode: true,
            extra: BTreeMap::new(),
        }
    }
}

/// The fields PEFT writes that this crate neither reads nor refuses, with PEFT's defaults.
fn peft_defaults() -> [(&'static str, Value); 10] {
    [
        ("init_lora_weights", Value::Bool(true)),
        ("layers_pattern", Value::Null),
        ("layers_to_transform", Value::Null),
        ("layer_replication", Value::Null),
        ("loftq_config", Value::Object(serde_json::Map::new())),
        ("megatron_config", Value::Null),
        ("megatron_core", Value::String("megatron.core".to_owned())),
        ("revision", Value::Null),
        ("use_qalora", Value::Bool(false)),
        ("trainable_token_indices", Value::Null),
    ]
}

impl LoraConfig {
    /// A config with rank `r` and `lora_alpha`, the other fields as PEFT's defaults.
    #[must_use]
    pub fn new(r: usize, lora_alpha: f64) -> Self {
        let mut config = LoraConfig {
            r,
            lora_alpha,
            ..LoraConfig::default()
        };
        for (key, value) in peft_defaults() {
            config.extra.insert(key.to_owned(), value);
        }
        config
    }

    /// The same config with rsLoRA scaling (`alpha / sqrt(r)`).
    #[must_use]
    pub fn rslora(self, use_rslora: bool) -> Self {
        LoraConfig { use_rslora, ..self }
    }

    /// The same config with these `target_modules`.
    #[must_use]
    pub fn with_target_modules<I, S>(self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        LoraConfig {
            target_modules: Some(TargetModules::List(
                names.into_iter().map(Into::into).collect(),
            )),
            ..self
        }
    }

    /// Parses an `adapter_config.json`.
    ///
    /// # Errors
    ///
    /// When the text is not JSON, or a field has the wrong type.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The config as PEFT writes it: keys sorted, two spaces of indent.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Serializing a struct of plain fields and maps of strings cannot fail.
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        let mut text = serde_json::to_string_pretty(&sorted(value)).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The target spec this config describes (`target_modules`, `exclude_modules`,
    /// `layers_to_transform`, `rank_pattern`, `alpha_pattern`), with PEFT's semantics.
    ///
    /// # Errors
    ///
    /// When the config's patterns do not parse.
    pub fn target_spec(&self) -> Result<TargetSpec, PeftConfigError> {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        TargetSpec::from_peft_value(&value)
    }

    /// The ranks and alphas this config gives its layers, chosen as target resolution chooses
    /// them: the most specific `rank_pattern` / `alpha_pattern` key, else `r` / `lora_alpha`
    /// (see [`TargetSpec::rank_and_alpha_for`]).
    pub(crate) fn ranks(&self) -> Result<TargetSpec, PeftConfigError> {
        let value = serde_json::json!({
            // Every layer: only the ranks and alphas of this spec are read.
            "target_modules": ".*",
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "rank_pattern": self.rank_pattern,
            "alpha_pattern": self.alpha_pattern,
        });
        TargetSpec::from_peft_value(&value)
    }

    /// The first option set that this crate does not support: its name and value.
    pub(crate) fn unsupported(&self) -> Option<(&'static str, String)> {
        if !self.peft_type.eq_ignore_ascii_case("lora") {
            return Some(("peft_type", format!("{:?}", self.peft_type)));
        }
        if self.use_dora {
            return Some(("use_dora", "true".to_owned()));
        }
        if let Some(parameters) = self.target_parameters.as_ref().filter(|p| !p.is_empty()) {
            return Some(("target_parameters", format!("{parameters:?}")));
        }
        if self.bias != "none" {
            return Some(("bias", format!("{:?}", self.bias)));
        }
        if self.lora_bias {
            return Some(("lora_bias", "true".to_owned()));
        }
        if self.fan_in_fan_out {
            return Some(("fan_in_fan_out", "true".to_owned()));
        }
        if let Some(modules) = self.modules_to_save.as_ref().filter(|m| !m.is_empty()) {
            return Some(("modules_to_save", format!("{modules:?}")));
        }
        for key in ["layer_replication", "trainable_token_indices"] {
            if let Some(value) = self.extra.get(key).filter(|value| !value.is_null()) {
                return Some((key, value.to_string()));
            }
        }
        None
    }
}

/// Writes an integral float as an integer, as Python's `json` writes PEFT's `int` alphas.
#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's serialize_with passes a reference"
)]
fn number<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    match integral(*value) {
        Some(int) => serializer.serialize_i64(int),
        None => serializer.serialize_f64(*value),
    }
}

fn number_map<S: Serializer>(
    map: &BTreeMap<String, f64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.iter().map(|(key, value)| {
        let value = integral(*value).map_or_else(|| Value::from(*value), Value::from);
        (key, value)
    }))
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "only values that are whole and within ±2^53 are converted"
)]
fn integral(value: f64) -> Option<i64> {
    (value.fract() == 0.0 && value.abs() < 9.0e15).then_some(value as i64)
}

/// Sorts every object's keys, whatever map type `serde_json` was built with.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let entries: BTreeMap<String, Value> = map
                .into_iter()
                .map(|(key, value)| (key, sorted(value)))
                .collect();
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
