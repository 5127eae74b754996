//! The one error type of the candle integration.
//!
//! Every variant that concerns a layer names its path; every shape error names the expected
//! shape and what its axes mean, so that the message alone says what to fix.

use std::path::PathBuf;

/// Why applying, loading, saving or changing a LoRA adapter was refused.
///
/// When an operation returns an error the model is exactly as it was before the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    /// A file could not be read or written.
    #[error("cannot access `{}`: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `adapter_config.json` is not a valid LoRA config.
    #[error("`{}` is not a valid LoRA adapter config: {source}", file.display())]
    Config {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The config's `rank_pattern` or `alpha_pattern` holds a key that is not a valid pattern.
    #[error("the adapter config's rank or alpha patterns are invalid: {source}")]
    Patterns {
        /// The cause, naming the key.
        #[from]
        source: crate::target::PeftConfigError,
    },
    /// `adapter_model.safetensors` could not be parsed or written.
    #[error("`{}` is not a readable safetensors file: {message}", file.display())]
    Safetensors {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The adapter uses an option this crate does not implement.
    #[error(
        "unsupported adapter option `{option}` = {value}: only plain LoRA (and rsLoRA) with `bias = \"none\"` is supported"
    )]
    Unsupported {
        /// The option's name in `adapter_config.json`.
        option: &'static str,
        /// Its value.
        value: String,
    },
    /// A tensor's name is not `<path>.lora_A[.<adapter>].weight` or one of its variants.
    #[error(
        "tensor `{name}` is not a LoRA tensor: expected `[base_model.model.]<module path>.lora_A.weight` or `.lora_B.weight` (or `lora_embedding_A` / `lora_embedding_B`)"
    )]
    UnknownTensor {
        /// The tensor's name.
        name: String,
    },
    /// A tensor names a module path that is not a layer of the model.
    #[error("tensor `{name}` targets `{path}`, which is not a layer of the model")]
    NoSuchLayer {
        /// The tensor's name.
        name: String,
        /// The module path it names.
        path: String,
    },
    /// A target names a path that is not a leaf layer of the model.
    #[error("`{path}` is not a layer of the model")]
    NoLayer {
        /// The path.
        path: String,
    },
    /// One half of an `A`/`B` pair is missing.
    #[error("`{path}` has `{present}` but no `{missing}`: LoRA tensors come in pairs")]
    HalfPair {
        /// The module path.
        path: String,
        /// The tensor found.
        present: String,
        /// The tensor missing.
        missing: String,
    },
    /// Two tensors of one layer mix linear and embedding names, or repeat one name.
    #[error("`{path}` has conflicting LoRA tensors `{first}` and `{second}`")]
    Conflict {
        /// The module path.
        path: String,
        /// One tensor.
        first: String,
        /// The other.
        second: String,
    },
    /// A tensor has the wrong shape for its layer.
    #[error("tensor `{name}` for `{path}` has shape {found:?}; expected {expected:?} ({axes})")]
    Shape {
        /// The tensor's name.
        name: String,
        /// The module path.
        path: String,
        /// The shape the layer needs.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
        /// What the axes are (`"[r, in_features]"`).
        axes: &'static str,
    },
    /// The adapter's rank disagrees with what `adapter_config.json` says for the layer.
    #[error(
        "`{path}` has rank {found} in its tensors, but the adapter config gives r = {expected}"
    )]
    Rank {
        /// The module path.
        path: String,
        /// The rank from `r` and `rank_pattern`.
        expected: usize,
        /// The rank of the tensors.
        found: usize,
    },
    /// A rank of zero, or a non-finite or zero alpha.
    #[error(
        "`{path}`: invalid LoRA settings r = {rank}, alpha = {alpha}; r must be at least 1 and alpha finite"
    )]
    Settings {
        /// The module path.
        path: String,
        /// The rank.
        rank: usize,
        /// The alpha.
        alpha: f64,
    },
    /// The layer is of a type LoRA cannot adapt.
    #[error(
        "`{path}` is a `{type_name}`, which LoRA cannot adapt here; expected a linear layer (`candle_nn::Linear`, `LoraLinear`) or an embedding (`candle_nn::Embedding`, `LoraEmbedding`)"
    )]
    NotAdaptable {
        /// The module path.
        path: String,
        /// The layer's type name.
        type_name: &'static str,
    },
    /// A plain layer where an adapter slot is needed.
    #[error(
        "`{path}` is a plain `{type_name}`, which cannot hold an adapter; declare the field as `moduletree::candle::{slot}` (`{slot}::new(layer)`), or load the adapter with `LoadMode::Merge` to fold it into the weights"
    )]
    NotASlot {
        /// The module path.
        path: String,
        /// The layer's type name.
        type_name: &'static str,
        /// The slot type that would hold an adapter.
        slot: &'static str,
    },
    /// A slot already holds an adapter of that name.
    #[error("`{path}` already holds an adapter named `{adapter}`")]
    DuplicateAdapter {
        /// The module path.
        path: String,
        /// The adapter's name.
        adapter: String,
    },
    /// A slot has no adapter of that name.
    #[error("`{path}` holds no adapter named `{adapter}`")]
    MissingAdapter {
        /// The module path, or `""` for a slot on its own.
        path: String,
        /// The adapter's name.
        adapter: String,
    },
    /// The slot's adapters cannot change while one is merged into the base weight.
    #[error("`{path}` has adapter `{adapter}` merged into its weight; unmerge it first")]
    Merged {
        /// The module path, or `""` for a slot on its own.
        path: String,
        /// The merged adapter.
        adapter: String,
    },
    /// A variable of that name already exists in the `VarMap`.
    #[error(
        "variable `{name}` already exists in the VarBuilder's storage; apply each adapter to its own `VarMap` or under another prefix"
    )]
    VariableExists {
        /// The variable's full name.
        name: String,
    },
    /// A saved adapter's rank or alpha disagrees with the config it is saved with.
    #[error(
        "`{path}` holds adapter `{adapter}` with r = {rank}, alpha = {alpha}, rsLoRA = {rslora}, but the config gives r = {config_rank}, alpha = {config_alpha}, rsLoRA = {config_rslora}; set `rank_pattern` / `alpha_pattern` to match"
    )]
    ConfigMismatch {
        /// The module path.
        path: String,
        /// The adapter's name.
        adapter: String,
        /// The adapter's rank.
        rank: usize,
        /// The adapter's alpha.
        alpha: f64,
        /// Whether the adapter scales by rsLoRA.
        rslora: bool,
        /// The rank the config gives.
        config_rank: usize,
        /// The alpha the config gives.
        config_alpha: f64,
        /// Whether the config says rsLoRA.
        config_rslora: bool,
    },
    /// No layer of the model holds an adapter to save.
    #[error("no layer of the model holds an adapter named `{adapter}`")]
    NothingToSave {
        /// The adapter's name.
        adapter: String,
    },
    /// No layer was selected by the target spec.
    #[error(transparent)]
    Target(#[from] crate::target::ResolveError),
    /// A tensor operation failed.
    #[error("tensor operation failed at `{path}`: {source}")]
    Tensor {
        /// The module path.
        path: String,
        /// The cause.
        source: candle_core::Error,
    },
}

impl LoraError {
    /// The same error, naming `path` where it was raised without one (by a slot on its own).
    pub(crate) fn at(self, path: &str) -> Self {
        match self {
            LoraError::Shape {
                name,
                path: old,
                expected,
                found,
                axes,
            } if old.is_empty() => LoraError::Shape {
                name: format!("{path}.lora_{name}"),
                path: path.to_owned(),
                expected,
                found,
                axes,
            },
            LoraError::Settings {
                path: old,
                rank,
                alpha,
            } if old.is_empty() => LoraError::Settings {
                path: path.to_owned(),
                rank,
                alpha,
            },
            LoraError::DuplicateAdapter { path: old, adapter } if old.is_empty() => {
                LoraError::DuplicateAdapter {
                    path: path.to_owned(),
                    adapter,
                }
            }
            LoraError::Tensor { path: old, source } if old.is_empty() => LoraError::Tensor {
                path: path.to_owned(),
                source,
            },
            other => other,
        }
    }
}
