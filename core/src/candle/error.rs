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
    /// A rank of zero, or an alpha that is not finite.
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
    /// A tensor operation failed.
    #[error("tensor operation failed at `{path}`: {source}")]
    Tensor {
        /// The module path.
        path: String,
        /// The cause.
        source: candle_core::Error,
    },
}
