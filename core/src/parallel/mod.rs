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

mod build;
mod error;
mod export;
mod placement;
mod plan;

use std::collections::HashMap;

use serde::Serialize;

pub use crate::kind::Parallel;
use crate::path::{is_index, normalize};
pub use build::PlanBuilder;
pub use error::PlanError;
pub use export::TransformersPlans;
pub use placement::{
    Collective, Factor, GradSync, Group, Input, Layout, Output, Placement, Shard, part_sizes,
};
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
    /// rank that holds it. `None` when no layer of the planned model has that path's pattern, or
    /// the expert index lies past its list.
    #[must_use]
    pub fn layer(&self, path: &str) -> Option<LayerPlan> {
        let at = match self.instances.get(path) {
            Some(at) => *at,
            // A map key that is all digits stays itself in a pattern; an index becomes `<>`.
            None => *self
                .patterns
                .get(&normalize(path))
                .or_else(|| self.patterns.get(path))?,
        };
        let mut layer = self.layers[at].clone();
        layer.path = path.to_owned();
        if let Some(ExpertShare::One { index, rank }) = &mut layer.experts {
            let segments: Vec<&str> = path.split('.').collect();
            // The list this expert lies in: its path, `<>` standing for any index, is a prefix of
            // the layer's, followed by the expert's index.
            let found = self
                .experts
                .iter()
                .filter(|owner| !owner.fused)
                .find_map(|owner| {
                    let list: Vec<&str> = if owner.path.is_empty() {
                        Vec::new()
                    } else {
                        owner.path.split('.').collect()
                    };
                    let matches = segments.len() > list.len()
                        && list.iter().zip(&segments).all(|(list, segment)| {
                            list == segment || (*list == "<>" && is_index(segment))
                        });
                    let expert: usize = segments.get(list.len())?.parse().ok()?;
                    matches.then_some((expert, owner.experts, owner.per_rank))
                });
            if let Some((expert, experts, per_rank)) = found {
                if experts.is_some_and(|experts| expert >= experts) {
                    return None;
                }
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
