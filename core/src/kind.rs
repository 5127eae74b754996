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

/// How a layer's weight is split across the ranks of its process group (tensor parallelism),
/// written `#[layer(parallel = "...")]`.
///
/// The styles are Megatron-LM's and PyTorch's (`torch.distributed.tensor.parallel`); their names in
/// transformers' `base_model_tp_plan` are given with each. A weight is `[out, in]` as in PyTorch;
/// an embedding's is `[vocabulary, hidden]`. [`ParallelPlan`](crate::parallel::ParallelPlan) turns
/// the style into the placement of the weight, of its LoRA factors, and the collective after each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Parallel {
    /// The output dimension is split; the input is whole on every rank, the output stays split
    /// (transformers `colwise`).
    Column,
    /// The input dimension is split; the input arrives split, the partial outputs are summed
    /// (all-reduce) into a whole output (transformers `rowwise`).
    Row,
    /// Every rank holds the whole weight (the default for a layer without a style).
    Replicated,
    /// A vocabulary-parallel embedding: the vocabulary rows are split, each rank looks up the ids it
    /// holds and the partial lookups are summed (transformers `embedding_rowwise`).
    Vocab,
    /// Column-parallel with the output gathered whole on every rank, as an output head
    /// (transformers `colwise_gather_output`).
    ColumnGather,
    /// Row-parallel whose input arrives whole: each rank takes its slice of the input first
    /// (transformers `rowwise_split_input`).
    RowSplit,
    /// Column-parallel over several projections fused on the output axis (`q/k/v`, `gate/up`):
    /// each part is split on its own, so a rank holds its slice of every part (transformers
    /// `packed_colwise`). The parts come from `#[layer(parts = [...])]`.
    PackedColumn,
    /// Row-parallel over several inputs fused on the input axis, each part split on its own
    /// (transformers `packed_rowwise`).
    PackedRow,
}

impl Parallel {
    /// Every style, in the order of the enum.
    pub const ALL: [Parallel; 8] = [
        Parallel::Column,
        Parallel::Row,
        Parallel::Replicated,
        Parallel::Vocab,
        Parallel::ColumnGather,
        Parallel::RowSplit,
        Parallel::PackedColumn,
        Parallel::PackedRow,
    ];

    /// The style's name as written in `#[layer(parallel = "...")]`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Parallel::Column => "column",
            Parallel::Row => "row",
            Parallel::Replicated => "replicated",
            Parallel::Vocab => "vocab",
            Parallel::ColumnGather => "column_gather",
            Parallel::RowSplit => "row_split",
            Parallel::PackedColumn => "packed_column",
            Parallel::PackedRow => "packed_row",
        }
    }

    /// The style with this name, if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Parallel> {
        Parallel::ALL.into_iter().find(|style| style.name() == name)
    }

    /// Whether the style fuses parts that are split one by one (`packed_column`, `packed_row`).
    #[must_use]
    pub const fn is_packed(self) -> bool {
        matches!(self, Parallel::PackedColumn | Parallel::PackedRow)
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

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl serde::Serialize for Parallel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl serde::Serialize for Expertise {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Expertise::None => "none",
            Expertise::Routed => "routed",
            Expertise::Shared => "shared",
        })
    }
}
