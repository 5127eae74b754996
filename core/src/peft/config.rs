//! PEFT's `adapter_config.json` for LoRA, typed: read, validated, written.
//!
//! [`LoraConfig`] names the fields of PEFT 0.21's `LoraConfig` (`peft/tuners/lora/config.py`)
//! that decide what an adapter computes and selects; every other field of the file is kept in
//! [`LoraConfig::extra`] as it was read and written back. [`LoraConfig::validate`] is the one
//! check every loader and writer runs: a rank of at least 1, a finite alpha within f32's range, a dropout in
//! `[0, 1)`, and no option this crate refuses (see [`Refusal`]). Written files have PEFT's
//! layout: keys sorted, two spaces of indent, an integral `lora_alpha` as an integer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::target::{PeftConfigError, TargetSpec};

/// PEFT's `target_modules`, `exclude_modules` and `layers_pattern`: a list of names, or one
/// string (a regex, or a shorthand such as `"all-linear"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Names matched exactly or as a dotted suffix (`q_proj` matches `model.layers.0.q_proj`).
    List(Vec<String>),
    /// A regex that must match the whole module path, or `"all-linear"`.
    Regex(String),
}

/// PEFT's `layers_to_transform`: one layer index or a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayerIndices {
    /// One index.
    One(usize),
    /// Several indices.
    List(Vec<usize>),
}

/// A LoRA `adapter_config.json` as PEFT 0.21 writes it.
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
    /// Dropout on the adapter's input while training, in `[0, 1)`.
    pub lora_dropout: f64,
    /// Scale by `alpha / sqrt(r)` instead of `alpha / r` (rsLoRA).
    pub use_rslora: bool,
    /// Weight-decomposed LoRA; refused.
    pub use_dora: bool,
    /// `"none"`; trained biases (`"all"`, `"lora_only"`) are refused.
    pub bias: String,
    /// A bias on `lora_B`; refused.
    pub lora_bias: bool,
    /// Weights stored `[in, out]` (GPT-2's `Conv1D`); refused.
    pub fan_in_fan_out: bool,
    /// The modules adapted.
    pub target_modules: Option<TargetModules>,
    /// The modules left out; wins over `target_modules`.
    pub exclude_modules: Option<TargetModules>,
    /// Keep only the layers with these indices.
    pub layers_to_transform: Option<LayerIndices>,
    /// Where `layers_to_transform` reads a layer index: after a module named like one of these.
    pub layers_pattern: Option<TargetModules>,
    /// Parameters adapted whole (PEFT's `target_parameters`): experts fused in one weight, as
    /// `<module>.<parameter>` names.
    pub target_parameters: Option<Vec<String>>,
    /// Ranks per module-name pattern, overriding `r`.
    pub rank_pattern: BTreeMap<String, usize>,
    /// Alphas per module-name pattern, overriding `lora_alpha`.
    #[serde(serialize_with = "number_map")]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Modules trained and saved whole; no LoRA is ever placed inside them.
    pub modules_to_save: Option<Vec<String>>,
    /// How the factors were initialised: `true`, `false`, `"gaussian"`, `"orthogonal"`, `"eva"`
    /// are accepted; initialisers that change the base weights are refused.
    pub init_lora_weights: Value,
    /// Give an output head tied to an adapted input embedding the embedding's adapter
    /// (transposed), as PEFT 0.21 does with `tie_word_embeddings`.
    pub ensure_weight_tying: bool,
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
            layers_to_transform: None,
            layers_pattern: None,
            target_parameters: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            modules_to_save: None,
            init_lora_weights: Value::Bool(true),
            ensure_weight_tying: false,
            base_model_name_or_path: None,
            task_type: None,
            inference_mode: true,
            extra: BTreeMap::new(),
        }
    }
}

/// The fields PEFT 0.21 writes that this crate neither reads nor refuses, with PEFT's defaults.
fn peft_defaults() -> [(&'static str, Value); 6] {
    [
        ("loftq_config", Value::Object(serde_json::Map::new())),
        ("megatron_config", Value::Null),
        ("megatron_core", Value::String("megatron.core".to_owned())),
        ("revision", Value::Null),
        ("use_qalora", Value::Bool(false)),
        ("trainable_token_indices", Value::Null),
    ]
}

/// An option of PEFT's `LoraConfig` that this crate does not implement, found set in a config.
///
/// The list, checked in this order: `peft_type` other than `LORA`; the variants that compute
/// something else than `W + scale · B A` or need tensors beside the factors (`use_dora` DoRA,
/// `alora_invocation_tokens` aLoRA, `use_qalora` QALoRA, `use_bdlora` BD-LoRA, `arrow_config`
/// Arrow, `monteclora_config` MonteCLoRA, `velora_config`, `kasa_config`); initialisers that
/// change the base weights, so that the adapter is meaningless on the published base
/// (`init_lora_weights` = `pissa…`, `olora`, `corda`, `loftq`, `lora_ga`, `mica`); trained biases
/// (`bias` other than `"none"`, `lora_bias`); `fan_in_fan_out`; `layer_replication`;
/// `trainable_token_indices`. (`target_parameters` is read: it selects expert banks.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The option's key in `adapter_config.json`.
    pub option: &'static str,
    /// Its value, as JSON.
    pub value: String,
    /// Why it is refused.
    pub reason: &'static str,
}

/// Options refused when set to anything but `null` (or `false`), with the reason.
const REFUSED_WHEN_SET: [(&str, &str); 11] = [
    (
        "use_dora",
        "DoRA needs a magnitude vector and another forward",
    ),
    (
        "alora_invocation_tokens",
        "aLoRA activates the adapter per token",
    ),
    ("use_qalora", "QALoRA pools the input of quantized layers"),
    ("use_bdlora", "BD-LoRA shares block-diagonal factors"),
    ("arrow_config", "Arrow routes between several adapters"),
    ("monteclora_config", "MonteCLoRA samples its factors"),
    (
        "velora_config",
        "VeLoRA compresses activations with its own forward",
    ),
    ("kasa_config", "KaSA changes the base weights"),
    ("lora_bias", "a bias on lora_B is not implemented"),
    (
        "fan_in_fan_out",
        "weights stored [in, out] (GPT-2's Conv1D) are not implemented",
    ),
    (
        "layer_replication",
        "layer replication changes the model's structure",
    ),
];

/// `init_lora_weights` values (or prefixes) that change the base weights.
const BASE_CHANGING_INITS: [&str; 6] = ["pissa", "olora", "corda", "loftq", "lora_ga", "mica"];

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

    /// The same config with these `target_modules` (a list; a single `"all-linear"` entry means
    /// the shorthand, as PEFT's string form does).
    #[must_use]
    pub fn with_target_modules<I, S>(self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = names.into_iter().map(Into::into).collect();
        let target_modules = if names.len() == 1 && names[0] == "all-linear" {
            TargetModules::Regex(names.remove(0))
        } else {
            TargetModules::List(names)
        };
        LoraConfig {
            target_modules: Some(target_modules),
            ..self
        }
    }

    /// The same config with these `modules_to_save`.
    #[must_use]
    pub fn with_modules_to_save<I, S>(self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        LoraConfig {
            modules_to_save: Some(names.into_iter().map(Into::into).collect()),
            ..self
        }
    }

    /// Parses an `adapter_config.json`. Only the JSON's shape is checked here; see
    /// [`validate`](Self::validate) for the values.
    ///
    /// # Errors
    ///
    /// When the text is not JSON, or a field has the wrong type: the message names the field.
    pub fn from_json(json: &str) -> Result<Self, PeftConfigError> {
        // Read as JSON first, as Python's `json` reads it (a repeated key keeps its last value),
        // so that a document of the wrong shape is told from text that is not JSON.
        let value: Value = serde_json::from_str(json).map_err(|error| PeftConfigError::Json {
            line: error.line(),
            column: error.column(),
            message: error.to_string(),
        })?;
        if !value.is_object() {
            return Err(PeftConfigError::NotAnObject {
                found: super::config_json::json_kind(&value),
            });
        }
        serde_path_to_error::deserialize(&value)
            .map_err(|error| super::config_json::wrong_field(&value, &error))
    }

    /// The config as PEFT writes it: keys sorted, two spaces of indent, a final newline.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Serializing plain fields and maps with string keys cannot fail.
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        let mut text = serde_json::to_string_pretty(&sorted(value)).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The first option set that this crate refuses (see [`Refusal`] for the list).
    #[must_use]
    pub fn refusal(&self) -> Option<Refusal> {
        let refuse = |option, value: String, reason| {
            Some(Refusal {
                option,
                value,
                reason,
            })
        };
        if !self.peft_type.eq_ignore_ascii_case("lora") {
            return refuse(
                "peft_type",
                format!("{:?}", self.peft_type),
                "only LoRA adapters are implemented",
            );
        }
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        for (option, reason) in REFUSED_WHEN_SET {
            if let Some(set) = value.get(option).filter(|v| !v.is_null() && **v != false) {
                return refuse(option, set.to_string(), reason);
            }
        }
        if let Some(init) = self.init_lora_weights.as_str()
            && BASE_CHANGING_INITS
                .iter()
                .any(|prefix| init.to_ascii_lowercase().starts_with(prefix))
        {
            return refuse(
                "init_lora_weights",
                format!("{init:?}"),
                "this initialiser changes the base weights, which the adapter file does not hold",
            );
        }
        if self.bias != "none" {
            return refuse(
                "bias",
                format!("{:?}", self.bias),
                "trained biases are not implemented",
            );
        }
        if let Some(indices) = value
            .get("trainable_token_indices")
            .filter(|v| !v.is_null())
        {
            return refuse(
                "trainable_token_indices",
                indices.to_string(),
                "trainable tokens are not implemented",
            );
        }
        None
    }

    /// Checks the values: a rank of at least 1 that fits `u32` (in `r` and `rank_pattern`), a
    /// finite alpha (zero and negative alphas are PEFT's to allow), a dropout in `[0, 1)`, no
    /// refused option, and selection fields that parse.
    ///
    /// # Errors
    ///
    /// [`ConfigProblem::Invalid`] naming the field, or [`ConfigProblem::Refused`].
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        let invalid = |field: String, message: String| {
            Err(ConfigProblem::Invalid(PeftConfigError::WrongType {
                field,
                expected: "a valid value",
                found: message,
            }))
        };
        if self.r == 0 || u32::try_from(self.r).is_err() {
            return invalid(
                "r".to_owned(),
                format!("{} (a rank is 1 to 2^32 - 1)", self.r),
            );
        }
        // The scale (alpha / r, or alpha / √r) is applied in f32: an alpha beyond f32's range
        // would merge to infinities, and unmerge to NaN.
        let in_range = |alpha: f64| alpha.is_finite() && alpha.abs() <= f64::from(f32::MAX);
        if !in_range(self.lora_alpha) {
            return invalid(
                "lora_alpha".to_owned(),
                format!(
                    "{} (an alpha is a finite number within f32's range, ±3.4e38)",
                    self.lora_alpha
                ),
            );
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return invalid(
                "lora_dropout".to_owned(),
                format!("{} (a probability in [0, 1))", self.lora_dropout),
            );
        }
        for (key, rank) in &self.rank_pattern {
            if *rank == 0 || u32::try_from(*rank).is_err() {
                return invalid(format!("rank_pattern[{key:?}]"), format!("{rank}"));
            }
        }
        for (key, alpha) in &self.alpha_pattern {
            if !in_range(*alpha) {
                return invalid(
                    format!("alpha_pattern[{key:?}]"),
                    format!("{alpha} (an alpha is a finite number within f32's range, ±3.4e38)"),
                );
            }
        }
        if let Some(refusal) = self.refusal() {
            return Err(ConfigProblem::Refused(refusal));
        }
        self.target_spec().map(drop).map_err(ConfigProblem::Invalid)
    }

    /// The target spec this config describes (`target_modules`, `exclude_modules`,
    /// `layers_to_transform`, `layers_pattern`, `modules_to_save`, `r`, `lora_alpha`,
    /// `rank_pattern`, `alpha_pattern`), with PEFT's meaning (see [`crate::target::peft`]).
    ///
    /// # Errors
    ///
    /// When the config's patterns do not parse, or it names neither `target_modules` nor
    /// `target_parameters`.
    pub fn target_spec(&self) -> Result<TargetSpec, PeftConfigError> {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        TargetSpec::from_peft_value(&value)
    }

    /// The spec that holds only this config's `modules_to_save` (every module targeted), for
    /// [`TargetSpec::in_saved_module`].
    pub(crate) fn saved_modules_spec(&self) -> Result<TargetSpec, PeftConfigError> {
        let value = serde_json::json!({
            "target_modules": ".*",
            "modules_to_save": self.modules_to_save,
        });
        TargetSpec::from_peft_value(&value)
    }

    /// The scale PEFT gives a layer of this rank and alpha: `alpha / r`, or `alpha / √r` with
    /// rsLoRA (`peft/tuners/lora/layer.py`, `LoraLayer.update_layer`).
    #[must_use]
    pub fn scale(&self, rank: u32, alpha: f64) -> f64 {
        scale(rank, alpha, self.use_rslora)
    }
}

/// PEFT's LoRA scale: `alpha / r`, or `alpha / √r` with rsLoRA.
#[must_use]
pub fn scale(rank: u32, alpha: f64, rslora: bool) -> f64 {
    let rank = f64::from(rank);
    if rslora {
        alpha / rank.sqrt()
    } else {
        alpha / rank
    }
}

/// The alpha that gives a layer of this rank the scale `scale` under PEFT's rule ([`scale`]):
/// `scale · r`, or `scale · √r` with rsLoRA, with the rounding of that product undone when it
/// lies within 1e-9 (relative) of a value with six decimals (`8.000000000000002` is `8`).
#[must_use]
pub fn alpha_for(scale: f64, rank: u32, rslora: bool) -> f64 {
    let rank = f64::from(rank);
    let alpha = if rslora {
        scale * rank.sqrt()
    } else {
        scale * rank
    };
    let rounded = (alpha * 1e6).round() / 1e6;
    if (rounded - alpha).abs() <= 1e-9 * alpha.abs().max(1.0) {
        rounded
    } else {
        alpha
    }
}

/// Why a config cannot be used.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigProblem {
    /// A field with a bad value or a selection that does not parse.
    Invalid(PeftConfigError),
    /// An option this crate refuses.
    Refused(Refusal),
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

/// Sorts the top-level keys of an object, whatever map type `serde_json` was built with (nested
/// maps keep the order they were built in; this crate's are `BTreeMap`s, already sorted).
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let entries: BTreeMap<String, Value> = map.into_iter().collect();
            Value::Object(entries.into_iter().collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::{alpha_for, scale};

    #[test]
    fn alpha_for_inverts_scale_and_undoes_float_rounding() {
        for (rank, alpha, rslora) in [
            (8, 16.0, false),
            (8, 16.0, true),
            (3, 7.5, true),
            (1, 0.0, false),
        ] {
            assert_eq!(alpha_for(scale(rank, alpha, rslora), rank, rslora), alpha);
        }
        // 0.1 · 3 is 0.30000000000000004 in floats; the alpha written is 0.3.
        assert_eq!(alpha_for(0.1, 3, false), 0.3);
        // A value far from six decimals is kept as it is.
        assert_eq!(alpha_for(1.0, 2, true), 2.0_f64.sqrt());
    }
}
