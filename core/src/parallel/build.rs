//! Building a plan: one walk over the model or schema, one [`LayerPlan`] per layer pattern, the
//! owners of routed experts counted as the walk goes.

use std::collections::HashMap;

use crate::kind::{Expertise, Parallel};
use crate::parallel::plan::{Context, ExpertShare, ExpertsPlan, LayerFacts, LayerPlan, place};
use crate::parallel::{ParallelConfig, ParallelPlan, PlanError};
use crate::path::{Segment, push_path};
use crate::target::TargetSpec;
use crate::walk::{Node, Walk, walk};

/// The weight shapes a plan checks divisibility against: the shape of a layer's weight, or
/// `None` when unknown.
type Sizes<'s> = Box<SizesFn<'s>>;

/// The closure behind [`Sizes`].
type SizesFn<'s> = dyn Fn(&Node<'_, '_>) -> Option<Vec<usize>> + 's;

/// Builds a [`ParallelPlan`]; see the [module docs](crate::parallel).
#[allow(
    missing_debug_implementations,
    reason = "holds the caller's sizes closure"
)]
pub struct PlanBuilder<'s> {
    pub(super) config: ParallelConfig,
    pub(super) sizes: Option<Sizes<'s>>,
    pub(super) lora: Option<&'s TargetSpec>,
}

impl<'s> PlanBuilder<'s> {
    /// The shape of each layer's weight in PyTorch's layout (`[out, in]`, an embedding's
    /// `[vocabulary, hidden]`, a bank's `[experts, out, in]` with the experts at its
    /// `expert_axis`), so that the plan can check that every split divides; `None` where unknown.
    /// [`moduletree::candle::layer_shape`](crate::candle::layer_shape) reads them from candle
    /// layers whatever their storage; a checkpoint's headers hold them by path. Shapes of layers
    /// the plan does not split (norms, convolutions, replicated layers) are not checked. Without
    /// sizes, divisibility is left to the engine.
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
    /// Layers that share a pattern (their path with every index as `<>`), their facts, a weight
    /// shape and a LoRA rank share one [`LayerPlan`], so a plan holds one entry per layer of a
    /// block, not one per block: DeepSeek-V3's 45,000 expert projections are a handful of entries.
    ///
    /// A routed expert is placed by its expert index: the index right below the first routed node
    /// on its path (the `experts` list of `#[expert] experts: Vec<Mlp>`, or the list whose
    /// elements are of an `#[expert]` type). A list's expert count is one past its largest index
    /// that holds a layer.
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
            given_ranks: Vec::new(),
            instances: HashMap::new(),
            experts: Vec::new(),
            ancestors: Vec::new(),
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

/// Whether two lists of packed parts are equal; most layers have none (compared by hand: the
/// library comparison of two empty slices calls `bcmp`, a measurable cost per layer).
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

fn is_index(segment: &Segment<'_>) -> bool {
    matches!(segment, Segment::Index(_) | Segment::AnyIndex)
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
    /// Per entry of `layers`, the LoRA rank as the spec gave it, before any `r / top_k`.
    given_ranks: Vec<Option<u32>>,
    instances: HashMap<String, usize>,
    experts: Vec<ExpertsPlan>,
    /// The depth of each node on the current path, and whether it is a routed expert.
    ancestors: Vec<(usize, bool)>,
    list: Option<OpenList<'a>>,
    error: Option<PlanError>,
}

impl<'a> Building<'_, 'a> {
    fn visit(&mut self, node: &Node<'_, 'a>) {
        if self.error.is_some() {
            return;
        }
        let depth = node.path().segments().len();
        while self.ancestors.last().is_some_and(|(at, _)| *at >= depth) {
            self.ancestors.pop();
        }
        self.ancestors
            .push((depth, node.expertise() == Expertise::Routed));
        if node.kind().is_none() {
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
                    && self.given_ranks[*at] == rank
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
                self.given_ranks.push(rank);
                self.candidates[pattern].push(self.layers.len() - 1);
                self.layers.len() - 1
            }
        };
        if self.candidates[pattern].len() > 1 {
            self.instances.insert(node.path().to_string(), at);
        }
        if expertise == Expertise::Routed {
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
            if !path.is_empty() && !self.experts.iter().any(|owner| owner.path == path) {
                self.experts.push(ExpertsPlan {
                    path,
                    fused: true,
                    experts,
                    per_rank: experts.map(|experts| experts / self.config.ep),
                });
            }
            return Ok(());
        }
        // The first routed node on the path: a list of experts (the index follows it) or one
        // expert of a list (the index ends its path).
        let boundary = self
            .ancestors
            .iter()
            .find(|(_, routed)| *routed)
            .map_or(segments.len(), |(depth, _)| *depth);
        let index_at = if segments.get(boundary).is_some_and(is_index) {
            Some(boundary)
        } else if boundary > 0 && segments.get(boundary - 1).is_some_and(is_index) {
            Some(boundary - 1)
        } else {
            None
        };
        let Some(index_at) = index_at else {
            if self.config.ep > 1 {
                return Err(PlanError::ExpertWithoutIndex {
                    layer: node.path().to_string(),
                });
            }
            return Ok(());
        };
        let list = &segments[..index_at];
        let same = self
            .list
            .as_ref()
            .is_some_and(|open| same_segments(&open.segments, list));
        if !same {
            self.close_list();
            if let Some(error) = self.error.take() {
                return Err(error);
            }
            self.list = Some(OpenList {
                segments: list.to_vec(),
                length: 0,
            });
        }
        if let (Some(open), Segment::Index(index)) = (self.list.as_mut(), segments[index_at]) {
            open.length = open.length.max(index.saturating_add(1));
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
