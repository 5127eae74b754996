//! The error of candle's LoRA slots and of attaching fresh adapters. Reading and writing PEFT
//! files report [`PeftError`](crate::peft::PeftError), shared with burn.
//!
//! Every variant that concerns a layer names its path; every shape error names the expected
//! shape and what its axes mean, so that the message alone says what to fix.

/// Why applying or changing a LoRA adapter was refused.
///
/// When an operation returns an error the model is exactly as it was before the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    /// A target names a path that is not a leaf layer of the model.
    #[error("`{path}` is not a layer of the model")]
    NoLayer {
        /// The path.
        path: String,
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
