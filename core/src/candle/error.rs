//! The error of candle's LoRA slots and of attaching fresh adapters. Reading and writing PEFT
//! files report [`PeftError`](crate::peft::PeftError), shared with burn.
//!
//! Every variant that concerns a layer names its path when the operation knows it (a slot's own
//! methods do not: their errors say "the slot"); every shape error names the expected shape and
//! what its axes mean, so that the message alone says what to fix.

/// Why applying or changing a LoRA adapter was refused.
///
/// When an operation returns an error the model is exactly as it was before the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    /// A tensor has the wrong shape for its layer.
    #[error(
        "tensor `{name}`{} has shape {found:?}; expected {expected:?} ({axes})",
        suffix(" for", path)
    )]
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
        "{}invalid LoRA settings r = {rank}, alpha = {alpha}; r must be at least 1 and alpha finite",
        prefix(path)
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
    #[error("{} already holds an adapter named `{adapter}`", subject(path))]
    DuplicateAdapter {
        /// The module path.
        path: String,
        /// The adapter's name.
        adapter: String,
    },
    /// A slot has no adapter of that name.
    #[error("{} holds no adapter named `{adapter}`", subject(path))]
    MissingAdapter {
        /// The module path, or `""` for a slot on its own.
        path: String,
        /// The adapter's name.
        adapter: String,
    },
    /// The slot's adapters cannot change while one is merged into the base weight.
    #[error(
        "{} has adapter `{adapter}` merged into its weight; unmerge it first",
        subject(path)
    )]
    Merged {
        /// The module path, or `""` for a slot on its own.
        path: String,
        /// The merged adapter.
        adapter: String,
    },
    /// A tensor operation failed.
    #[error("tensor operation failed{}: {source}", suffix(" at", path))]
    Tensor {
        /// The module path.
        path: String,
        /// The cause.
        source: candle_core::Error,
    },
}

/// A slot's own errors carry no path (a slot does not know where it sits); the model-wide
/// operations fill it in. These render either form.
fn subject(path: &str) -> String {
    if path.is_empty() {
        "the slot".to_owned()
    } else {
        format!("`{path}`")
    }
}

fn prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("`{path}`: ")
    }
}

fn suffix(word: &str, path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{word} `{path}`")
    }
}
