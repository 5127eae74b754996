//! The errors of the burn integration: selecting layers for LoRA and reading or writing PEFT
//! files. Each names the path, key or file involved and, for shapes, what was expected.

use std::path::PathBuf;

use crate::kind::Kind;
use crate::target::ResolveError;

/// Selecting layers of a burn model for LoRA failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BurnError {
    /// A path names no node of the model.
    #[error("no module at path `{path}`")]
    UnknownLayer {
        /// The path given.
        path: String,
    },
    /// A path names a module or container, not a leaf layer.
    #[error("`{path}` is a module or container, not a layer")]
    NotALayer {
        /// The path given.
        path: String,
    },
    /// The layer has no 2-D float parameter: burn's LoRA adapts 2-D weights only.
    #[error("the {kind} layer `{path}` has no 2-D weight for burn's LoRA to adapt")]
    NoAdaptableWeight {
        /// The layer's path.
        path: String,
        /// The layer's kind.
        kind: Kind,
    },
    /// One weight was planned twice with different ranks or alphas.
    #[error(
        "`{path}` is planned with rank {} and alpha {} and again with rank {} and alpha {}",
        first.0, first.1, second.0, second.1
    )]
    Overlap {
        /// The weight's record path.
        path: String,
        /// The first `(rank, alpha)`.
        first: (usize, f64),
        /// The second `(rank, alpha)`.
        second: (usize, f64),
    },
    /// Several `(rank, alpha)` pairs where one burn `Lora` was asked for.
    #[error(
        "burn's `Lora` has one rank and one alpha, but the plan has {}; apply it with `LoraPlan::apply`",
        groups.iter().map(|(rank, alpha)| format!("rank {rank} alpha {alpha}")).collect::<Vec<_>>().join(", ")
    )]
    PerLayerRanks {
        /// The plan's `(rank, alpha)` pairs.
        groups: Vec<(usize, f64)>,
    },
    /// A plan with no layer where one burn `Lora` was asked for.
    #[error("the LoRA plan selects no layer")]
    EmptyPlan,
    /// A LoRA rank of 0.
    #[error("a LoRA rank must be at least 1")]
    ZeroRank,
    /// The target spec did not resolve against the model.
    #[error(transparent)]
    Target(#[from] ResolveError),
}

/// Loading or saving a PEFT adapter failed. On a load error the model is left unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeftError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `adapter_config.json` is not valid JSON or lacks a field of the expected type.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The config asks for something this loader does not implement.
    #[error("adapter_config.json: `{key}` = {value} is not supported ({reason})")]
    Unsupported {
        /// The config key.
        key: &'static str,
        /// Its value, as JSON.
        value: String,
        /// Why, or what is supported.
        reason: &'static str,
    },
    /// `adapter_model.safetensors` could not be parsed or written.
    #[error("{}: {message}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor key is not `<module>.lora_A.weight` or `<module>.lora_B.weight`.
    #[error(
        "unknown tensor `{key}`: expected `[base_model.model.]<module>.lora_A.weight` or `.lora_B.weight`"
    )]
    UnknownTensor {
        /// The key.
        key: String,
    },
    /// A tensor names a module the model does not have.
    #[error(
        "tensor `{key}` names module `{path}`, which the model does not have{}",
        suggest(suggestions)
    )]
    UnknownModule {
        /// The tensor's key.
        key: String,
        /// The module path it names.
        path: String,
        /// The nearest module paths of the model.
        suggestions: Vec<String>,
    },
    /// A tensor names a module that is neither a burn `Linear` nor an `Embedding`.
    #[error(
        "tensor `{key}` names `{path}`, a `{type_name}`; PEFT LoRA loads into burn `Linear` and `Embedding` layers only"
    )]
    NotALinear {
        /// The tensor's key.
        key: String,
        /// The module path.
        path: String,
        /// The module's type.
        type_name: &'static str,
    },
    /// A linear's factor names (`lora_A.weight`) on an embedding, or an embedding's
    /// (`lora_embedding_A`) on a linear.
    #[error("tensor `{key}` is named for another kind of layer than `{path}`, a `{type_name}`")]
    WrongNaming {
        /// The tensor's key.
        key: String,
        /// The module path.
        path: String,
        /// The module's type.
        type_name: &'static str,
    },
    /// A layer's factor appears twice (with and without PEFT's prefix) or under both namings.
    #[error("`{path}` has conflicting LoRA tensors `{first}` and `{second}`")]
    Conflict {
        /// The module path.
        path: String,
        /// The first key.
        first: String,
        /// The second key.
        second: String,
    },
    /// One of a layer's two factors is present, the other is not.
    #[error("`{path}` has `{present}` but no `{missing}`")]
    Unpaired {
        /// The module path.
        path: String,
        /// The key present.
        present: String,
        /// The key missing.
        missing: String,
    },
    /// A tensor's shape does not fit the layer.
    #[error("tensor `{key}` has shape {found:?}; `{path}` expects {expected:?}")]
    Shape {
        /// The tensor's key.
        key: String,
        /// The module path.
        path: String,
        /// The shape expected, `[r, in]` for `lora_A`, `[out, r]` for `lora_B`.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A tensor has a dtype other than F32, F16 or BF16.
    #[error("tensor `{key}` has dtype {dtype}; expected F32, F16 or BF16")]
    Dtype {
        /// The tensor's key.
        key: String,
        /// Its dtype.
        dtype: String,
    },
    /// A layer the config's `target_modules` selects has no tensors in the file.
    #[error("`{path}` is selected by target_modules but has no `lora_A`/`lora_B` tensors")]
    Missing {
        /// The module path.
        path: String,
    },
    /// The config's targets do not resolve against the model.
    #[error("adapter_config.json targets: {0}")]
    Target(ResolveError),
    /// A tensor names a layer the config's targets do not select.
    #[error("tensor `{key}` names `{path}`, which the config's target_modules do not select")]
    Untargeted {
        /// The tensor's key.
        key: String,
        /// The module path.
        path: String,
    },
    /// A layer already carries a LoRA adapter.
    #[error("`{path}` already carries a LoRA adapter; load into a model without one there")]
    AlreadyAdapted {
        /// The module path.
        path: String,
    },
    /// A layer the adapter targets cannot be changed in place (it sits behind an `Arc` or `Rc`).
    #[error("`{path}` is shared (behind an `Arc` or `Rc`) and cannot take an adapter in place")]
    ReadOnly {
        /// The module path.
        path: String,
    },
    /// Saving found no burn `Linear` or `Embedding` carrying a LoRA adapter.
    #[error("the model has no burn `Linear` or `Embedding` carrying a LoRA adapter to save")]
    NoAdapters,
}

fn suggest(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!(
            "; did you mean {}?",
            suggestions
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}
