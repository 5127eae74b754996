//! The errors of the burn integration: selecting layers for LoRA and reading or writing PEFT
//! files. Each names the path, key or file involved and, for shapes, what was expected.

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
