//! Where a tensor lives across ranks, and what happens to an output after it is computed.
//!
//! A [`Placement`] lists the axes of a tensor that are split and over which process group; an
//! empty list means every rank of the plan holds the whole tensor. [`Shard::indices`] says exactly
//! which rows (or columns) a rank holds, so the plan is executable data, not a description.

use serde::Serialize;

use crate::parallel::ParallelConfig;

/// A process group of the plan. Its size comes from the [`ParallelConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// The tensor-parallel group (`tp` ranks): dense layers and shared experts.
    Tensor,
    /// The expert-parallel group (`ep` ranks): each holds a share of the routed experts and sees
    /// different tokens, as in Megatron-LM, where it is carved from data parallelism.
    Expert,
    /// The expert-tensor-parallel group (`etp` ranks): splits each routed expert's matrices.
    ExpertTensor,
}

impl Group {
    /// The group's name in messages and JSON: `tensor`, `expert`, `expert_tensor`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Group::Tensor => "tensor",
            Group::Expert => "expert",
            Group::ExpertTensor => "expert_tensor",
        }
    }

    /// The group's size under `config`: `tp`, `ep` or `etp`.
    #[must_use]
    pub const fn size(self, config: &ParallelConfig) -> usize {
        match self {
            Group::Tensor => config.tp,
            Group::Expert => config.ep,
            Group::ExpertTensor => config.etp,
        }
    }
}

/// How the indices of a split axis are dealt out to the ranks of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Equal contiguous blocks: rank `k` of `g` holds `k·n/g .. (k+1)·n/g`.
    Even,
    /// Projections fused on this axis, in these proportions (`q/k/v`, `gate/up`): each part is split
    /// evenly on its own and a rank holds its block of every part, in part order.
    Packed(Vec<u32>),
    /// PEFT's rank-major expert factor `lora_B: [out, r·E]` of a fused bank, whose column
    /// `k·E + e` belongs to expert `e`: a rank holds the columns of its experts, for every `k`.
    RankMajor {
        /// The number of experts `E`; `None` in a plan made from a schema, where it is unknown.
        experts: Option<usize>,
    },
}

/// One split axis of a tensor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// The axis, in PyTorch's layout of the tensor (a linear weight's `[out, in]`, `lora_A`'s
    /// `[r, in]`, a bank's `[experts, out, in]` with the experts at its `expert_axis`), whatever
    /// the framework's storage.
    pub dim: usize,
    /// The group whose ranks share the axis out.
    pub group: Group,
    /// How the axis is dealt out.
    pub layout: Layout,
}

impl Shard {
    /// A split of `dim` into equal contiguous blocks over `group`.
    #[must_use]
    pub const fn even(dim: usize, group: Group) -> Shard {
        Shard {
            dim,
            group,
            layout: Layout::Even,
        }
    }

    /// The indices along the axis that rank `rank` of a group of `ranks` holds, in order, for an
    /// axis of length `len`; `None` when the axis does not split evenly (the plan refuses such
    /// sizes when it knows them) or `rank` is not below `ranks`.
    #[must_use]
    pub fn indices(&self, len: usize, ranks: usize, rank: usize) -> Option<Vec<usize>> {
        if ranks == 0 || rank >= ranks {
            return None;
        }
        match &self.layout {
            Layout::Even => {
                let block = exact_div(len, ranks)?;
                Some((rank * block..(rank + 1) * block).collect())
            }
            Layout::Packed(parts) => {
                let sizes = part_sizes(len, parts)?;
                let mut indices = Vec::new();
                let mut start = 0;
                for size in sizes {
                    let block = exact_div(size, ranks)?;
                    indices.extend(start + rank * block..start + (rank + 1) * block);
                    start += size;
                }
                Some(indices)
            }
            Layout::RankMajor { experts } => {
                let experts = &(*experts)?;
                let rank_dim = exact_div(len, *experts)?;
                let local = exact_div(*experts, ranks)?;
                let mut indices = Vec::with_capacity(rank_dim * local);
                for k in 0..rank_dim {
                    indices.extend((rank * local..(rank + 1) * local).map(|e| k * experts + e));
                }
                Some(indices)
            }
        }
    }
}

/// The sizes of packed parts in proportions `parts` along an axis of length `len`; `None` when
/// the proportions do not divide `len` exactly.
#[must_use]
pub fn part_sizes(len: usize, parts: &[u32]) -> Option<Vec<usize>> {
    let total: usize = parts.iter().map(|part| *part as usize).sum();
    let unit = exact_div(len, total)?;
    Some(parts.iter().map(|part| *part as usize * unit).collect())
}

fn exact_div(len: usize, ways: usize) -> Option<usize> {
    (ways != 0 && len.is_multiple_of(ways)).then(|| len / ways)
}

/// Where a tensor lives: the axes that are split, each over its group. No split axes: every rank
/// holds the whole tensor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Placement {
    /// The split axes, outermost group first.
    pub shards: Vec<Shard>,
}

impl Placement {
    /// Every rank holds the whole tensor.
    #[must_use]
    pub const fn replicated() -> Placement {
        Placement { shards: Vec::new() }
    }

    /// One split axis.
    #[must_use]
    pub fn split(shard: Shard) -> Placement {
        Placement {
            shards: vec![shard],
        }
    }

    /// Whether no axis is split.
    #[must_use]
    pub fn is_replicated(&self) -> bool {
        self.shards.is_empty()
    }

    /// The split of `group`, if the tensor is split over it.
    #[must_use]
    pub fn shard_over(&self, group: Group) -> Option<&Shard> {
        self.shards.iter().find(|shard| shard.group == group)
    }
}

/// What a layer's input must be on each rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "group")]
pub enum Input {
    /// The whole activation on every rank.
    Whole,
    /// Each rank holds its block of the feature axis (the output of a column-parallel layer).
    Split(Group),
    /// The whole activation arrives and the layer takes its rank's block of the feature axis.
    SplitHere(Group),
}

/// The state of an output once its collective has run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "group")]
pub enum Output {
    /// The whole activation on every rank.
    Whole,
    /// Each rank holds its block of the feature axis.
    Split(Group),
    /// Each rank holds a partial sum, which the module that owns the layer reduces (a routed
    /// expert's row-parallel projection: the experts module sums all experts' shares at once).
    Partial(Group),
}

/// The communication after a computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "op", content = "group")]
pub enum Collective {
    /// Nothing: the result is already in the state the next step needs.
    None,
    /// Sum the ranks' partial results; every rank gets the sum.
    AllReduce(Group),
    /// Concatenate the ranks' blocks of the feature axis; every rank gets the whole.
    AllGather(Group),
    /// Leave the partial sums as they are: the owner's reduction sums them with the base's. Reducing
    /// here as well would add the adapter's contribution once per rank of the group.
    Deferred(Group),
}

/// Which LoRA factor a gradient sync is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Factor {
    /// `lora_A`.
    A,
    /// `lora_B`.
    B,
}

/// A replicated factor whose copies would drift apart in training without this sync: its
/// gradient is summed (all-reduce) over the group, either because each rank computes only a part
/// of it (the `lora_A` of a column-parallel layer) or because the group's ranks see different
/// tokens (every factor outside the routed experts, under expert parallelism).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GradSync {
    /// The factor.
    pub factor: Factor,
    /// The group over which it is replicated.
    pub group: Group,
    /// Whether the factor must also be broadcast once from the group's first rank before
    /// training: `lora_A` is initialised at random, and copies drawn independently on each rank
    /// would start apart (`lora_B` starts at zero everywhere).
    pub broadcast: bool,
}
