//! The rules: from a layer's kind, style, expert role and (when known) weight shape to the
//! placement of its weight and of its LoRA factors.
//!
//! The rule that matters most is that an adapter's output is always in the parallel state of its
//! base's output (whole, split or partial), so the two can be added and the base's collective
//! covers both. Megatron-Bridge's expert LoRA breaks this once expert-tensor parallelism exceeds 1
//! (the adapter's output of a row-parallel expert projection is reduced, then reduced again with
//! the base's); here a partial base keeps a partial adapter ([`Collective::Deferred`]).

use serde::Serialize;

use crate::kind::{Expertise, Kind, Parallel};
use crate::parallel::ParallelConfig;
use crate::parallel::error::PlanError;
use crate::parallel::placement::{
    Collective, Factor, GradSync, Group, Input, Layout, Output, Placement, Shard, part_sizes,
};
use crate::walk::Node;

/// How a routed expert layer is dealt out to the expert-parallel group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertShare {
    /// A `grouped_linear` bank: its expert axis is split evenly over the expert group.
    Bank {
        /// The number of experts, when the weight's shape is known.
        experts: Option<usize>,
        /// The weight's expert axis.
        axis: usize,
    },
    /// One expert of a list: the whole layer lives on one rank of the expert group.
    One {
        /// The expert's index in its list (`None` in a schema, where it is `<>`).
        index: Option<usize>,
        /// The expert-group rank that holds it, when the list's length is known.
        rank: Option<usize>,
    },
}

/// The placement of a layer's LoRA factors (PEFT's `lora_A: [r, in]`, `lora_B: [out, r]`; for an
/// embedding `lora_embedding_A: [r, vocabulary]`, `lora_embedding_B: [hidden, r]`; for a fused
/// bank `lora_A: [E·r, in]` expert-major and `lora_B: [out, r·E]` rank-major).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoraPlacement {
    /// The rank each adapter of this layer gets, after `r / top_k` for routed experts when the
    /// config asks for it; `None` when no target spec was given or it does not select the layer.
    pub rank: Option<u32>,
    /// Where `lora_A` lives.
    pub a: Placement,
    /// What follows `x·Aᵀ`.
    pub after_a: Collective,
    /// Where `lora_B` lives.
    pub b: Placement,
    /// What follows `(x·Aᵀ)·Bᵀ`, so that the adapter's output matches the base's.
    pub after_b: Collective,
    /// The gradient syncs that keep replicated copies equal in training.
    pub sync: Vec<GradSync>,
}

/// The plan of one leaf layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerPlan {
    /// The layer's path (`model.layers.3.self_attn.q_proj`; `<>` for indices in a schema).
    pub path: String,
    /// Its kind.
    pub kind: Kind,
    /// Its style; `Replicated` for a layer without one.
    pub style: Parallel,
    /// The fused parts of a packed layer.
    pub parts: Vec<u32>,
    /// The expert axis of a `grouped_linear` weight.
    pub expert_axis: u8,
    /// Routed expert, shared expert or neither.
    pub expertise: Expertise,
    /// The stored shape of the weight, when known.
    pub shape: Option<Vec<usize>>,
    /// For a routed expert, how it is dealt out to the expert group.
    pub experts: Option<ExpertShare>,
    /// What the layer's input must be.
    pub input: Input,
    /// Where the weight lives.
    pub weight: Placement,
    /// What follows the base's product.
    pub after_base: Collective,
    /// The state of the output once `after_base` has run; the adapter's matches it.
    pub output: Output,
    /// The LoRA factors' placement, for the kinds LoRA adapts (linear family, embedding, router).
    pub lora: Option<LoraPlacement>,
}

/// The module that owns routed experts: it dispatches tokens to them over the expert group and
/// sums their results (all-to-all, then the combine that also reduces partial expert outputs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExpertsPlan {
    /// The owner's path: a bank's parent module, or the list of per-expert modules.
    pub path: String,
    /// Whether the experts are fused in `grouped_linear` banks (else one module per expert).
    pub fused: bool,
    /// The number of experts, when known.
    pub experts: Option<usize>,
    /// The experts each rank of the expert group holds, when known.
    pub per_rank: Option<usize>,
}

/// A layer as the walk reports it, before placement.
pub(crate) struct LayerFacts {
    pub path: String,
    pub kind: Kind,
    pub style: Option<Parallel>,
    pub parts: &'static [u32],
    pub expert_axis: usize,
    pub expertise: Expertise,
}

impl LayerFacts {
    /// The facts of a leaf layer node.
    pub fn of(node: &Node<'_, '_>) -> LayerFacts {
        let info = node.info();
        LayerFacts {
            path: node.path().to_string(),
            kind: node.kind().unwrap_or(Kind::Custom("")),
            style: info.parallel,
            parts: info.parts,
            expert_axis: usize::from(info.expert_axis),
            expertise: node.expertise(),
        }
    }
}

/// The inputs of one placement.
pub(crate) struct Context<'c> {
    pub config: &'c ParallelConfig,
    pub shape: Option<Vec<usize>>,
    pub rank: Option<u32>,
}

/// Places one layer.
pub(crate) fn place(facts: &LayerFacts, context: &Context<'_>) -> Result<LayerPlan, PlanError> {
    let layer = || facts.path.clone();
    let style = facts.style.unwrap_or(Parallel::Replicated);
    // A custom kind takes any style, as the derive lets it.
    let custom = matches!(facts.kind, Kind::Custom(_));
    let fits = match style {
        Parallel::Replicated => true,
        Parallel::Vocab => facts.kind == Kind::Embedding || custom,
        _ => facts.kind.is_linear_family() || custom,
    };
    if !fits {
        return Err(PlanError::StyleDoesNotFit {
            layer: layer(),
            kind: facts.kind,
            style,
        });
    }
    if style.is_packed() && facts.parts.len() < 2 {
        return Err(PlanError::PackedWithoutParts {
            layer: layer(),
            style,
        });
    }
    let routed = facts.expertise == Expertise::Routed;
    let bank = facts.kind == Kind::GroupedLinear;
    let group = if routed {
        Group::ExpertTensor
    } else {
        Group::Tensor
    };
    let ways = group.size(context.config);
    let axis = facts.expert_axis;
    // Only a layer the plan splits has its shape checked: a norm's `[hidden]` or a convolution's
    // four axes are whole on every rank whatever they are.
    let splits = bank || style != Parallel::Replicated;
    let shape = context.shape.as_ref().filter(|_| splits);
    if let Some(shape) = shape {
        let (rank, what) = if bank {
            (3, "a weight of three axes [experts, out, in]")
        } else {
            (2, "a weight of two axes [out, in]")
        };
        if shape.len() != rank || axis >= rank {
            return Err(PlanError::Shape {
                layer: layer(),
                expected: what.to_owned(),
                shape: shape.clone(),
            });
        }
    }
    // The axes of each expert's matrix within the stored weight.
    let (out_dim, in_dim) = if bank {
        match axis {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        }
    } else {
        (0, 1)
    };
    let layout = if style.is_packed() {
        Layout::Packed(facts.parts.to_vec())
    } else {
        Layout::Even
    };
    let split = |dim| Shard {
        dim,
        group,
        layout: layout.clone(),
    };
    let column = matches!(
        style,
        Parallel::Column | Parallel::ColumnGather | Parallel::PackedColumn
    );
    let row = matches!(
        style,
        Parallel::Row | Parallel::RowSplit | Parallel::PackedRow
    );
    let mut weight = Placement::replicated();
    let (mut a, mut b) = (Placement::replicated(), Placement::replicated());
    if column {
        weight.shards.push(split(out_dim));
        b.shards.push(split(0));
    } else if row {
        weight.shards.push(split(in_dim));
        a.shards.push(split(1));
    } else if style == Parallel::Vocab {
        weight.shards.push(split(0));
        a.shards.push(split(1));
    }
    let experts = expert_share(facts, shape, context.config.ep, bank, axis)?;
    if bank {
        let count = match &experts {
            Some(ExpertShare::Bank { experts, .. }) => *experts,
            _ => None,
        };
        weight.shards.insert(0, Shard::even(axis, Group::Expert));
        a.shards.insert(0, Shard::even(0, Group::Expert));
        b.shards.insert(
            0,
            Shard {
                dim: 1,
                group: Group::Expert,
                layout: Layout::RankMajor { experts: count },
            },
        );
    }
    if let Some(shape) = shape {
        check_divides(facts, &weight, shape, context.config)?;
    }
    let (input, after_base, output, after_a, after_b) = match style {
        Parallel::Replicated => (
            Input::Whole,
            Collective::None,
            Output::Whole,
            Collective::None,
            Collective::None,
        ),
        Parallel::Column | Parallel::PackedColumn => (
            Input::Whole,
            Collective::None,
            Output::Split(group),
            Collective::None,
            Collective::None,
        ),
        Parallel::ColumnGather => (
            Input::Whole,
            Collective::AllGather(group),
            Output::Whole,
            Collective::None,
            Collective::AllGather(group),
        ),
        Parallel::Vocab => (
            Input::Whole,
            Collective::AllReduce(group),
            Output::Whole,
            Collective::AllReduce(group),
            Collective::None,
        ),
        Parallel::Row | Parallel::RowSplit | Parallel::PackedRow => {
            let input = if style == Parallel::RowSplit {
                Input::SplitHere(group)
            } else {
                Input::Split(group)
            };
            if routed {
                (
                    input,
                    Collective::Deferred(group),
                    Output::Partial(group),
                    Collective::None,
                    Collective::Deferred(group),
                )
            } else {
                (
                    input,
                    Collective::AllReduce(group),
                    Output::Whole,
                    Collective::AllReduce(group),
                    Collective::None,
                )
            }
        }
    };
    let adaptable =
        facts.kind.is_linear_family() || matches!(facts.kind, Kind::Embedding | Kind::Router);
    let lora = if adaptable {
        let mut sync = Vec::new();
        if ways > 1 && column {
            sync.push(GradSync {
                factor: Factor::A,
                group,
                broadcast: true,
            });
        }
        if ways > 1 && row && routed {
            sync.push(GradSync {
                factor: Factor::B,
                group,
                broadcast: false,
            });
        }
        if !routed && context.config.ep > 1 {
            for factor in [Factor::A, Factor::B] {
                sync.push(GradSync {
                    factor,
                    group: Group::Expert,
                    broadcast: factor == Factor::A,
                });
            }
        }
        Some(LoraPlacement {
            rank: expert_rank(facts, context)?,
            a,
            after_a,
            b,
            after_b,
            sync,
        })
    } else {
        None
    };
    Ok(LayerPlan {
        path: facts.path.clone(),
        kind: facts.kind,
        style,
        parts: facts.parts.to_vec(),
        expert_axis: u8::try_from(facts.expert_axis).unwrap_or(u8::MAX),
        expertise: facts.expertise,
        shape: context.shape.clone(),
        experts,
        input,
        weight,
        after_base,
        output,
        lora,
    })
}

/// The rank an adapter of this layer gets, normalised as `r / top_k` for routed experts when the
/// config asks for it (ROLL and Megatron-Bridge divide expert ranks by the number of experts each
/// token visits, so that a token's expert adapters together hold rank `r`).
fn expert_rank(facts: &LayerFacts, context: &Context<'_>) -> Result<Option<u32>, PlanError> {
    let (Some(rank), Some(top_k)) = (context.rank, context.config.expert_rank_top_k) else {
        return Ok(context.rank);
    };
    if facts.expertise != Expertise::Routed {
        return Ok(Some(rank));
    }
    let divisor = u64::try_from(top_k).unwrap_or(u64::MAX);
    let given = u64::from(rank);
    if divisor == 0 || given < divisor || !given.is_multiple_of(divisor) {
        return Err(PlanError::RankNotDivisible {
            layer: facts.path.clone(),
            rank,
            top_k,
        });
    }
    Ok(u32::try_from(given / divisor).ok())
}

fn expert_share(
    facts: &LayerFacts,
    shape: Option<&Vec<usize>>,
    ep: usize,
    bank: bool,
    axis: usize,
) -> Result<Option<ExpertShare>, PlanError> {
    if facts.expertise != Expertise::Routed {
        return Ok(None);
    }
    if bank {
        let experts = shape.and_then(|shape| shape.get(axis)).copied();
        if let Some(experts) = experts
            && !experts.is_multiple_of(ep)
        {
            return Err(PlanError::ExpertsNotDivisible {
                layer: facts.path.clone(),
                experts,
                ep,
            });
        }
        return Ok(Some(ExpertShare::Bank { experts, axis }));
    }
    // The index and its rank are filled in per layer by `ParallelPlan::layer`; each layer's index
    // is found, and each list's length checked, as the walk goes.
    Ok(Some(ExpertShare::One {
        index: None,
        rank: None,
    }))
}

/// Checks that every split axis of the weight divides over its group.
fn check_divides(
    facts: &LayerFacts,
    weight: &Placement,
    shape: &[usize],
    config: &ParallelConfig,
) -> Result<(), PlanError> {
    for shard in &weight.shards {
        let ways = shard.group.size(config);
        let len = shape[shard.dim];
        let what = axis_name(facts, shard.dim, shape);
        if shard.group == Group::Expert {
            // Checked with the expert share, which names the experts.
            continue;
        }
        match &shard.layout {
            Layout::Packed(parts) => {
                let sizes = part_sizes(len, parts).ok_or_else(|| PlanError::PartsDoNotFit {
                    layer: facts.path.clone(),
                    size: len,
                    parts: parts.clone(),
                })?;
                for (part, size) in sizes.into_iter().enumerate() {
                    if !size.is_multiple_of(ways) {
                        return Err(PlanError::NotDivisible {
                            layer: facts.path.clone(),
                            what: format!("part {part} of {what}"),
                            size,
                            group: shard.group,
                            ways,
                        });
                    }
                }
            }
            Layout::Even | Layout::RankMajor { .. } => {
                if !len.is_multiple_of(ways) {
                    return Err(PlanError::NotDivisible {
                        layer: facts.path.clone(),
                        what,
                        size: len,
                        group: shard.group,
                        ways,
                    });
                }
            }
        }
    }
    Ok(())
}

/// An axis of a weight in words: `the output size of weight [8, 16]`.
fn axis_name(facts: &LayerFacts, dim: usize, shape: &[usize]) -> String {
    let name = match (facts.kind, facts.kind == Kind::GroupedLinear) {
        (Kind::Embedding, _) if dim == 0 => "the vocabulary size",
        (Kind::Embedding, _) => "the hidden size",
        (_, true) if dim == facts.expert_axis => "the expert count",
        (_, true) => {
            let last = if facts.expert_axis == 2 { 1 } else { 2 };
            if dim == last {
                "the input size"
            } else {
                "the output size"
            }
        }
        _ if dim == 0 => "the output size",
        _ => "the input size",
    };
    format!("{name} of weight {shape:?}")
}
