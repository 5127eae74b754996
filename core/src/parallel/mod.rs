//! Parallel plans: the tree's tensor- and expert-parallel facts as data that training engines read.
//!
//! A layer declares its tensor-parallel style with `#[layer(parallel = "...")]` (see [`Parallel`];
//! packed layers add `parts = [...]`, banks `expert_axis = N`), and routed experts are typed with
//! `#[expert]` or are `grouped_linear` banks. From a model or its [`Schema`](crate::Schema) and a
//! [`ParallelConfig`], [`ParallelPlan`] places every layer's weight and its LoRA factors:
//!
//! - the split axes and process group of the weight, `lora_A` and `lora_B` ([`Placement`]);
//! - the collective after the base's product, after `x·Aᵀ` and after `·Bᵀ` ([`Collective`]), so
//!   that the adapter's output is in the state of the base's (whole, split or partial);
//! - the rank each expert adapter gets (`r / top_k` when asked, as ROLL's
//!   `mcore_adapter` and Megatron-Bridge do), and the gradient syncs of replicated factors;
//! - for routed experts, which expert-parallel rank holds which expert ([`ExpertsPlan`]).
//!
//! Groups follow Megatron-LM: dense layers and shared experts split over the tensor group (`tp`);
//! routed experts are dealt out over the expert group (`ep`) and each expert's matrices split over
//! the expert-tensor group (`etp`). transformers' own `base_model_tp_plan` splits experts over the
//! tensor group, which is `etp = tp` here.
//!
//! Every impossible plan is a [`PlanError`] that names the layer and the number that does not
//! divide. [`ParallelPlan::transformers`] exports transformers' `base_model_tp_plan` /
//! `base_model_ep_plan` (`transformers/distributed/tensor_parallel.py` and `expert_parallel.py`
//! name the styles), [`ParallelPlan::deepspeed_autotp`] DeepSpeed AutoTP's `partition_config`
//! (`deepspeed/module_inject/autotp_config.py`), and the plan itself serialises to JSON with
//! every layer's LoRA placement ([`ParallelPlan::to_json`]).
//!
//! ```
//! use moduletree::ModuleTree;
//! use moduletree::parallel::{ParallelConfig, ParallelPlan};
//!
//! #[derive(ModuleTree)]
//! struct Mlp {
//!     #[layer(kind = "linear", parallel = "column")]
//!     up_proj: Vec<f32>,
//!     #[layer(kind = "linear", parallel = "row")]
//!     down_proj: Vec<f32>,
//! }
//!
//! let plan = ParallelPlan::builder(ParallelConfig::new(2, 1, 1))
//!     .sizes(|node| {
//!         let up = node.path().to_string() == "up_proj";
//!         Some(if up { vec![64, 16] } else { vec![16, 64] })
//!     })
//!     .build(&Mlp { up_proj: Vec::new(), down_proj: Vec::new() })?;
//! let plans = plan.transformers("")?;
//! assert_eq!(plans.base_model_tp_plan["up_proj"], "colwise");
//! assert_eq!(plans.base_model_tp_plan["down_proj"], "rowwise");
//! # Ok::<(), moduletree::parallel::PlanError>(())
//! ```

mod error;
mod export;
mod placement;
mod plan;

use std::collections::HashMap;

use serde::Serialize;

use crate::kind::Expertise;
pub use crate::kind::Parallel;
use crate::path::{Segment, normalize, push_path};
use crate::target::TargetSpec;
use crate::walk::{Node, Walk, walk};
pub use error::PlanError;
pub use export::TransformersPlans;
pub use placement::{
    Collective, Factor, GradSync, Group, Input, Layout, Output, Placement, Shard, part_sizes,
};
use plan::{Context, LayerFacts, place};
pub use plan::{ExpertShare, ExpertsPlan, LayerPlan, LoraPlacement};

/// The sizes of the process groups, and how expert LoRA ranks are normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ParallelConfig {
    /// Tensor-parallel size: ranks that split each dense layer.
    pub tp: usize,
    /// Expert-parallel size: ranks that share out the routed experts.
    pub ep: usize,
    /// Expert-tensor-parallel size: ranks that split each routed expert's matrices.
    pub etp: usize,
    /// Divide routed experts' LoRA ranks by this `top_k` (the experts each token visits); a rank
    /// that does not divide is refused.
    pub expert_rank_top_k: Option<usize>,
}

impl ParallelConfig {
    /// `tp`, `ep` and `etp` ranks, expert ranks as given.
    #[must_use]
    pub const fn new(tp: usize, ep: usize, etp: usize) -> ParallelConfig {
        ParallelConfig {
            tp,
            ep,
            etp,
            expert_rank_top_k: None,
        }
    }

    /// The same sizes, with routed experts' LoRA ranks divided by `top_k`.
    #[must_use]
    pub const fn normalize_expert_rank(self, top_k: usize) -> ParallelConfig {
        ParallelConfig {
            expert_rank_top_k: Some(top_k),
            ..self
        }
    }

    fn check(&self) -> Result<(), PlanError> {
        for (name, size) in [("tp", self.tp), ("ep", self.ep), ("etp", self.etp)] {
            if size == 0 {
                return Err(PlanError::ZeroGroup { name });
            }
        }
        if self.expert_rank_top_k == Some(0) {
            return Err(PlanError::ZeroGroup { name: "top_k" });
        }
        Ok(())
    }
}

impl Default for ParallelConfig {
    fn default() -> Self {
        ParallelConfig::new(1, 1, 1)
    }
}

/// The weight shapes a plan checks divisibility against: the stored shape of a layer's weight,
/// or `None` when unknown.
type Sizes<'s> = Box<SizesFn<'s>>;

/// The closure behind [`Sizes`].
type SizesFn<'s> = dyn Fn(&Node<'_, '_>) -> Option<Vec<usize>> + 's;

/// Builds a [`ParallelPlan`]; see the [module docs](self).
#[allow(
    missing_debug_implementations,
    reason = "holds the caller's sizes closure"
)]
pub struct PlanBuilder<'s> {
    config: ParallelConfig,
    sizes: Option<Sizes<'s>>,
    lora: Option<&'s TargetSpec>,
}

impl<'s> PlanBuilder<'s> {
    /// The stored weight shape of each layer (`[out, in]`, an embedding's `[vocabulary, hidden]`,
    /// a bank's three axes), so that the plan can check that every split divides.
    /// [`moduletree::candle::layer_shape`](crate::candle::layer_shape) reads them from a candle
    /// model; a checkpoint's headers hold them by path. Without sizes, divisibility is left to the
    /// engine.
    #[must_use]
    pub fn sizes(mut self, sizes: impl Fn(&Node<'_, '_>) -> Option<Vec<usize>> + 's) -> Self {
        self.sizes = Some(Box::new(sizes));
        self
    }

    /// The LoRA targets, for the rank of each adapted layer (after rank patterns).
    #[must_use]
    pub fn lora(mut self, spec: &'s TargetSpec) -> Self {
        self.lora = Some(spec);
        self
    }

    /// Places every leaf layer of `model` (a model, or a type's [`Schema`](crate::Schema)).
    ///
    /// Layers that share a pattern (their path with every index as `<>`), a weight shape and a
    /// LoRA rank share one [`LayerPlan`], so a plan holds one entry per layer of a block, not one
    /// per block: DeepSeek-V3's 45,000 expert projections are a handful of entries.
    ///
    /// # Errors
    ///
    /// A [`PlanError`] naming the first layer that cannot be placed, or the target spec's error
    /// when it selects nothing.
    pub fn build<T: Walk + ?Sized>(self, model: &T) -> Result<ParallelPlan, PlanError> {
        self.config.check()?;
        let ranks: HashMap<String, u32> = match self.lora {
            Some(spec) => spec
                .resolve(model)
                .map_err(|error| PlanError::Target {
                    message: error.to_string(),
                })?
                .layers
                .into_iter()
                .map(|layer| (layer.path, layer.rank))
                .collect(),
            None => HashMap::new(),
        };
        let mut building = Building {
            config: self.config,
            sizes: self.sizes.as_deref(),
            ranks: &ranks,
            key: String::new(),
            patterns: HashMap::new(),
            candidates: Vec::new(),
            recent: Vec::with_capacity(RECENT),
            layers: Vec::new(),
            instances: HashMap::new(),
            experts: Vec::new(),
            list: None,
            error: None,
        };
        walk(model, |node| building.visit(node));
        building.close_list();
        match building.error {
            Some(error) => Err(error),
            None => Ok(ParallelPlan {
                config: self.config,
                patterns: building
                    .patterns
                    .into_iter()
                    .map(|(key, pattern)| (key, building.candidates[pattern][0]))
                    .collect(),
                layers: building.layers,
                instances: building.instances,
                experts: building.experts,
            }),
        }
    }
}

/// How many recent patterns a build compares before hashing.
const RECENT: usize = 8;

/// The list of per-expert modules being walked: its segments and one past its largest index.
struct OpenList<'a> {
    segments: Vec<Segment<'a>>,
    length: usize,
}

/// Whether two lists of packed parts are equal; most layers have none.
fn same_parts(left: &[u32], right: &[u32]) -> bool {
    left.len() == right.len() && left.iter().zip(right).all(|(left, right)| left == right)
}

/// Whether two paths are equal, comparing names by address first: a walk's names are the
/// schema's `&'static str`s, so equal names are almost always the same string.
fn same_segments(left: &[Segment<'_>], right: &[Segment<'_>]) -> bool {
    left.len() == right.len()
        && left.iter().zip(right).rev().all(|pair| match pair {
            (Segment::Name(left), Segment::Name(right))
            | (Segment::Key(left), Segment::Key(right)) => {
                core::ptr::eq(*left, *right) || left == right
            }
            (left, right) => left == right,
        })
}

/// The state of one build.
struct Building<'b, 'a> {
    config: ParallelConfig,
    sizes: Option<&'b SizesFn<'b>>,
    ranks: &'b HashMap<String, u32>,
    /// The current layer's pattern, written into one reused buffer.
    key: String,
    /// Each pattern's index into `candidates`.
    patterns: HashMap<String, usize>,
    /// Per pattern, the layers (entries of `layers`) that have it.
    candidates: Vec<Vec<usize>>,
    /// The last few patterns seen, with their index.
    recent: Vec<(String, usize)>,
    layers: Vec<LayerPlan>,
    instances: HashMap<String, usize>,
    experts: Vec<ExpertsPlan>,
    list: Option<OpenList<'a>>,
    error: Option<PlanError>,
}

impl<'a> Building<'_, 'a> {
    fn visit(&mut self, node: &Node<'_, 'a>) {
        if self.error.is_some() || node.kind().is_none() {
            return;
        }
        if let Err(error) = self.place(node) {
            self.error = Some(error);
        }
    }

    fn place(&mut self, node: &Node<'_, 'a>) -> Result<(), PlanError> {
        let shape = self.sizes.and_then(|sizes| sizes(node));
        let rank = if self.ranks.is_empty() {
            None
        } else {
            self.ranks.get(&node.path().to_string()).copied()
        };
        self.key.clear();
        push_path(&mut self.key, node.path().segments(), true);
        // Layers of one block come round again and again (gate, up, down of each expert): the
        // recently seen patterns are compared before the map is hashed.
        let key = self.key.as_str();
        let recent = self.recent.iter().find(|(recent, _)| recent == key);
        let seen_recently = recent.is_some();
        let pattern = match recent {
            Some((_, pattern)) => Some(*pattern),
            None => self.patterns.get(key).copied(),
        };
        // Layers under one pattern share an entry when everything that places them is the same:
        // the enum variants of a schema (or of two layers) can differ in kind or style.
        let info = node.info();
        let style = info.parallel.unwrap_or(Parallel::Replicated);
        let (kind, expertise) = (node.kind(), node.expertise());
        let known = pattern.and_then(|pattern| {
            self.candidates[pattern].iter().copied().find(|at| {
                let layer = &self.layers[*at];
                layer.style == style
                    && layer.expertise == expertise
                    && layer.expert_axis == info.expert_axis
                    && Some(layer.kind) == kind
                    && same_parts(&layer.parts, info.parts)
                    && layer.shape == shape
                    && layer.lora.as_ref().and_then(|lora| lora.rank) == rank
            })
        });
        let pattern = match pattern {
            Some(pattern) => pattern,
            None => {
                self.candidates.push(Vec::new());
                let pattern = self.candidates.len() - 1;
                self.patterns.insert(self.key.clone(), pattern);
                pattern
            }
        };
        if !seen_recently {
            if self.recent.len() == RECENT {
                self.recent.remove(0);
            }
            self.recent.push((self.key.clone(), pattern));
        }
        let at = match known {
            Some(at) => at,
            None => {
                let facts = LayerFacts::of(node);
                let context = Context {
                    config: &self.config,
                    shape,
                    rank,
                };
                let mut layer = place(&facts, &context)?;
                layer.path = self.key.clone();
                self.layers.push(layer);
                self.candidates[pattern].push(self.layers.len() - 1);
                self.layers.len() - 1
            }
        };
        if self.candidates[pattern].len() > 1 {
            self.instances.insert(node.path().to_string(), at);
        }
        if node.expertise() == Expertise::Routed {
            self.count_expert(node, at)?;
        }
        Ok(())
    }

    /// Records the owner of a routed expert layer: a bank's parent module, or the list of
    /// per-expert modules it lies in (counted as the walk goes).
    fn count_expert(&mut self, node: &Node<'_, 'a>, at: usize) -> Result<(), PlanError> {
        let segments = node.path().segments();
        if let Some(ExpertShare::Bank { experts, .. }) = self.layers[at].experts {
            let mut path = String::new();
            push_path(
                &mut path,
                &segments[..segments.len().saturating_sub(1)],
                false,
            );
            if !self.experts.iter().any(|owner| owner.path == path) {
                self.experts.push(ExpertsPlan {
                    path,
                    fused: true,
                    experts,
                    per_rank: experts.map(|experts| experts / self.config.ep),
                });
            }
            return Ok(());
        }
        let Some(last) = segments
            .iter()
            .rposition(|segment| matches!(segment, Segment::Index(_) | Segment::AnyIndex))
        else {
            return Ok(());
        };
        let index = match segments[last] {
            Segment::Index(index) => Some(index),
            _ => None,
        };
        let same = self
            .list
            .as_ref()
            .is_some_and(|list| same_segments(&list.segments, &segments[..last]));
        if !same {
            self.close_list();
            if let Some(error) = self.error.take() {
                return Err(error);
            }
            self.list = Some(OpenList {
                segments: segments[..last].to_vec(),
                length: 0,
            });
        }
        if let (Some(list), Some(index)) = (self.list.as_mut(), index) {
            list.length = list.length.max(index.saturating_add(1));
        }
        Ok(())
    }

    /// Ends the list of per-expert modules being walked: records its owner and checks that its
    /// experts divide over the expert group.
    fn close_list(&mut self) {
        let Some(list) = self.list.take() else {
            return;
        };
        let mut path = String::new();
        push_path(&mut path, &list.segments, false);
        let experts = (list.length > 0).then_some(list.length);
        if let Some(experts) = experts
            && !experts.is_multiple_of(self.config.ep)
            && self.error.is_none()
        {
            self.error = Some(PlanError::ExpertsNotDivisible {
                layer: path.clone(),
                experts,
                ep: self.config.ep,
            });
        }
        self.experts.push(ExpertsPlan {
            path,
            fused: false,
            experts,
            per_rank: experts.map(|experts| experts / self.config.ep),
        });
    }
}

/// The placement of every layer of a model over tensor-, expert- and expert-tensor-parallel
/// ranks; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParallelPlan {
    config: ParallelConfig,
    layers: Vec<LayerPlan>,
    experts: Vec<ExpertsPlan>,
    /// Each pattern's first entry.
    #[serde(skip)]
    patterns: HashMap<String, usize>,
    /// The layers whose pattern has several entries (different shapes or ranks), by path.
    #[serde(skip)]
    instances: HashMap<String, usize>,
}

impl ParallelPlan {
    /// A builder for the plan of a model under `config`.
    #[must_use]
    pub fn builder<'s>(config: ParallelConfig) -> PlanBuilder<'s> {
        PlanBuilder {
            config,
            sizes: None,
            lora: None,
        }
    }

    /// The group sizes the plan was made for.
    #[must_use]
    pub fn config(&self) -> &ParallelConfig {
        &self.config
    }

    /// One entry per layer pattern (the path with every index as `<>`, weight shape and LoRA
    /// rank), in walk order of first appearance.
    #[must_use]
    pub fn layers(&self) -> &[LayerPlan] {
        &self.layers
    }

    /// The plan of the layer at `path` (`model.layers.3.mlp.experts.17.up_proj`): its pattern's
    /// entry with the path itself, and for one expert of a list, its index and the expert-group
    /// rank that holds it.
    #[must_use]
    pub fn layer(&self, path: &str) -> Option<LayerPlan> {
        let at = match self.instances.get(path) {
            Some(at) => *at,
            None => *self.patterns.get(&normalize(path))?,
        };
        let mut layer = self.layers[at].clone();
        layer.path = path.to_owned();
        if let Some(ExpertShare::One { index, rank }) = &mut layer.experts {
            // The expert's index is the segment right after its list's path.
            let found = self
                .experts
                .iter()
                .filter(|owner| !owner.fused)
                .find_map(|owner| {
                    let rest = if owner.path.is_empty() {
                        Some(path)
                    } else {
                        path.strip_prefix(owner.path.as_str())
                            .and_then(|rest| rest.strip_prefix('.'))
                    };
                    let expert: usize = rest?.split('.').next()?.parse().ok()?;
                    Some((expert, owner.per_rank))
                });
            if let Some((expert, per_rank)) = found {
                *index = Some(expert);
                *rank = per_rank
                    .filter(|per_rank| *per_rank > 0)
                    .map(|per_rank| expert / per_rank);
            }
        }
        Some(layer)
    }

    /// The modules that own routed experts, in walk order.
    #[must_use]
    pub fn experts(&self) -> &[ExpertsPlan] {
        &self.experts
    }

    /// The plan as JSON: the config, every layer pattern with its weight and LoRA placement, and
    /// the experts' owners.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
