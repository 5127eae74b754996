//! Layer kinds: the one place where kind names live.
//!
//! A leaf of the module tree carries a [`Kind`]. The names here are the ones the
//! `#[layer(kind = "...")]` attribute accepts and the ones every display and error prints.

use core::fmt;

/// What a leaf layer is.
///
/// `Linear`, `GroupedLinear` and `LayernormLinear` form the *linear family*: the layers that
/// `all-linear` and [`find_all_linear_modules`](crate::find_all_linear_modules) select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A dense projection, `y = x Wᵀ + b`.
    Linear,
    /// Experts fused into one weight with an expert axis; always an expert.
    GroupedLinear,
    /// A linear with a fused input norm (Megatron's `LayerNormLinear`).
    LayernormLinear,
    /// A lookup table from token ids to vectors.
    Embedding,
    /// The gate of a mixture of experts, scoring tokens against experts.
    Router,
    /// A convolution.
    Conv,
    /// A normalisation layer (LayerNorm, RMSNorm, …).
    Norm,
    /// A kind of the user's own, written `#[layer(custom = "name")]`.
    Custom(&'static str),
}

impl Kind {
    /// The built-in kind names, in the order of the enum.
    pub const NAMES: [&'static str; 7] = [
        "linear",
        "grouped_linear",
        "layernorm_linear",
        "embedding",
        "router",
        "conv",
        "norm",
    ];

    /// The kind's name as written in `#[layer(kind = "...")]`; a custom kind's own name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Linear => "linear",
            Kind::GroupedLinear => "grouped_linear",
            Kind::LayernormLinear => "layernorm_linear",
            Kind::Embedding => "embedding",
            Kind::Router => "router",
            Kind::Conv => "conv",
            Kind::Norm => "norm",
            Kind::Custom(name) => name,
        }
    }

    /// The built-in kind with this name, if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "linear" => Kind::Linear,
            "grouped_linear" => Kind::GroupedLinear,
            "layernorm_linear" => Kind::LayernormLinear,
            "embedding" => Kind::Embedding,
            "router" => Kind::Router,
            "conv" => Kind::Conv,
            "norm" => Kind::Norm,
            _ => return None,
        })
    }

    /// Whether the kind is `linear`, `grouped_linear` or `layernorm_linear`.
    #[must_use]
    pub const fn is_linear_family(self) -> bool {
        matches!(
            self,
            Kind::Linear | Kind::GroupedLinear | Kind::LayernormLinear
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The tensor-parallel style of a linear layer, for sharding plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Parallel {
    /// The output dimension is split across ranks.
    Column,
    /// The input dimension is split across ranks.
    Row,
}

impl Parallel {
    /// `"column"` or `"row"`, as written in `#[layer(parallel = "...")]`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Parallel::Column => "column",
            Parallel::Row => "row",
        }
    }
}

impl fmt::Display for Parallel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a node is a routed expert, a shared expert, or neither (see
/// [`Node::expertise`](crate::Node::expertise)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expertise {
    /// Not an expert.
    None,
    /// A routed expert (`#[expert]`, or a `grouped_linear` bank): expert-parallel.
    Routed,
    /// A shared expert (`#[expert(shared)]`): every token passes through it; replicated.
    Shared,
}
