//! Why a plan cannot be made: each error names the layer and the number that does not fit.

use thiserror::Error;

use crate::kind::{Kind, Parallel};
use crate::parallel::Group;

/// A parallel plan that cannot be made, or exported to a format that has no word for it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A group size of zero in the [`ParallelConfig`](crate::parallel::ParallelConfig).
    #[error("`{name}` must be at least 1, found 0")]
    ZeroGroup {
        /// `tp`, `ep` or `etp`.
        name: &'static str,
    },
    /// An axis that does not split evenly over its group.
    #[error(
        "layer `{layer}`: {what} is {size}, which does not divide over the {} group of {ways} ranks",
        group.name()
    )]
    NotDivisible {
        /// The layer's path.
        layer: String,
        /// The axis, in words (`the output size of weight [out, in]`).
        what: String,
        /// Its length.
        size: usize,
        /// The group it is split over.
        group: Group,
        /// The group's size.
        ways: usize,
    },
    /// A `packed_column` or `packed_row` layer without its parts.
    #[error(
        "layer `{layer}` is `parallel = \"{style}\"` but declares no parts: give the fused projections' sizes or ratios with `#[layer(parts = [...])]` (gate and up: `parts = [1, 1]`)"
    )]
    PackedWithoutParts {
        /// The layer's path.
        layer: String,
        /// Its style.
        style: Parallel,
    },
    /// Packed parts whose proportions do not divide the packed axis.
    #[error(
        "layer `{layer}`: the packed axis of length {size} does not split into parts in the proportions {parts:?}"
    )]
    PartsDoNotFit {
        /// The layer's path.
        layer: String,
        /// The packed axis's length.
        size: usize,
        /// The declared proportions.
        parts: Vec<u32>,
    },
    /// Routed experts that do not divide over the expert-parallel group.
    #[error(
        "layer `{layer}` holds {experts} routed experts, which do not divide over the expert group of {ep} ranks"
    )]
    ExpertsNotDivisible {
        /// The layer (or the experts' list) path.
        layer: String,
        /// The number of experts.
        experts: usize,
        /// The expert-parallel size.
        ep: usize,
    },
    /// A routed expert outside any list or bank: expert parallelism has nothing to place it by.
    #[error(
        "layer `{layer}` is a routed expert without an expert index: expert parallelism places experts by their index in a list (`Vec`) or in a `grouped_linear` bank"
    )]
    ExpertWithoutIndex {
        /// The layer's path.
        layer: String,
    },
    /// A LoRA rank that the normalisation `r / top_k` cannot divide.
    #[error(
        "layer `{layer}`: LoRA rank {rank} does not divide by top_k = {top_k}; choose a rank that is a multiple of {top_k}, or leave expert ranks as they are"
    )]
    RankNotDivisible {
        /// The layer's path.
        layer: String,
        /// The rank before normalisation.
        rank: u32,
        /// The number of experts each token is routed to.
        top_k: usize,
    },
    /// A style that does not fit the layer's kind (from a schema written by hand).
    #[error("layer `{layer}` is a `{kind}` layer, which cannot be `parallel = \"{style}\"`")]
    StyleDoesNotFit {
        /// The layer's path.
        layer: String,
        /// Its kind.
        kind: Kind,
        /// Its style.
        style: Parallel,
    },
    /// A weight whose shape does not have the axes its kind needs.
    #[error("layer `{layer}`: expected {expected}, found a weight of shape {shape:?}")]
    Shape {
        /// The layer's path.
        layer: String,
        /// What was expected, in words.
        expected: String,
        /// The shape found.
        shape: Vec<usize>,
    },
    /// Two layers under one `*` path with different styles: one plan entry cannot hold both.
    #[error(
        "`{key}` stands for layers of two styles, {first} and {second}: transformers' plans key one style per path pattern"
    )]
    ExportConflict {
        /// The plan key.
        key: String,
        /// One style.
        first: String,
        /// The other.
        second: String,
    },
    /// The LoRA target spec given for the ranks could not be resolved.
    #[error("the LoRA targets for the plan: {message}")]
    Target {
        /// The resolution error.
        message: String,
    },
    /// A base model path under which no layer lies.
    #[error(
        "no layer lies under the base model path `{base}`: give the path of the base model in this tree (`model` for a `…ForCausalLM`), or `\"\"` when the tree is the base model"
    )]
    NoSuchBase {
        /// The path given.
        base: String,
    },
    /// A layer whose placement the target format cannot express.
    #[error("layer `{layer}`: {format} has no style for {what}")]
    Unsupported {
        /// The layer's path.
        layer: String,
        /// The export format.
        format: &'static str,
        /// What it lacks.
        what: String,
    },
}
