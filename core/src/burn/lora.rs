//! Selections of layers as burn [`ParamGroup`]s, for burn's own LoRA.
//!
//! burn attaches LoRA adapters with `model.apply_lora(Lora::new(rank, alpha).set_param_group(group))`:
//! every 2-D float parameter whose record path (or id) the group matches gets an adapter, and
//! every base parameter is frozen. [`LoraSelection`] turns a list of layer paths — module-tree
//! paths, as a target spec resolves them — into that group: for each layer, the 2-D float
//! parameters that belong to it, named by their *record* paths (see [`PathMap`]). For burn-nn's
//! `Linear` and `Embedding` that is `weight`, found by its parameter id, so enum variant segments
//! and `#[tree(rename)]`s are accounted for; for other leaves, the 2-D parameters whose record
//! path, without enum variant names, lies right below the leaf's tree path.
//!
//! One `Lora` value has one rank and one alpha. Per-layer ranks and alphas are served by
//! [`LoraPlan`]: one `Lora` per distinct `(rank, alpha)`, applied in a single pass of burn's
//! `Module::apply_reparameterization` that hands each parameter to the `Lora` whose group matches
//! it. Calling burn's `apply_lora` twice does not do that: the second call would freeze the
//! adapter factors the first one created ([`apply_lora`] refuses a layer that has an adapter).

use std::collections::{HashMap, HashSet};

use burn::module::{Lora, LoraAdapter, Module, Param, ParamGroup, ParamId, Reparameterizer};
use burn::nn::{Embedding, Linear};
use burn::tensor::Tensor;

use crate::ModuleTree;
use crate::burn::error::BurnError;
use crate::burn::paths::PathMap;
use crate::burn::peft::weight_ref;
use crate::burn::{ExpertBank, ExpertLora};
use crate::kind::Kind;
use crate::path::push_path;
use crate::peft::{ADAPTER_CONFIG_FILE, AdaptedLayer, LoraConfig, PeftError};
use crate::target::{Resolution, TargetSpec};
use crate::walk::walk;

/// One selected layer and the weight burn will adapt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedLayer {
    /// The layer's module-tree path (`blocks.0.attn_proj`).
    pub path: String,
    /// The layer's kind.
    pub kind: Kind,
    /// The record paths of the layer's 2-D float parameters (`blocks.0.attn_proj.weight`).
    pub weights: Vec<String>,
}

/// Layers chosen for LoRA, with the record paths of the weights burn will adapt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoraSelection {
    layers: Vec<SelectedLayer>,
}

impl LoraSelection {
    /// Selects the layers at these module-tree paths (such as a resolved target spec's).
    ///
    /// # Errors
    ///
    /// [`BurnError::UnknownLayer`] when a path names no node of `model`,
    /// [`BurnError::NotALayer`] when it names a module or container rather than a leaf layer, and
    /// [`BurnError::NoAdaptableWeight`] when the layer has no 2-D float parameter (a convolution's
    /// weight is 3-D to 5-D, a norm's 1-D: burn's LoRA adapts 2-D weights only).
    pub fn from_paths<M, I, S>(model: &M, paths: I) -> Result<Self, BurnError>
    where
        M: Module + ModuleTree,
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let params = PathMap::new(model);
        let record_of: HashMap<ParamId, &str> = params
            .params()
            .iter()
            .map(|param| (param.id, param.record.as_str()))
            .collect();
        // A burn-nn `Linear` or `Embedding` names its weight by id, which holds through
        // `#[tree(rename)]`; other leaves own the 2-D parameters right below their tree path.
        // Only the requested nodes are recorded, each node's path joined into one buffer.
        let paths: Vec<S> = paths.into_iter().collect();
        /// A node's kind and, for a burn-nn `Linear` or `Embedding`, its weight's id.
        type Found = Option<(Option<Kind>, Option<ParamId>)>;
        let mut nodes: HashMap<&str, Found> =
            paths.iter().map(|path| (path.as_ref(), None)).collect();
        let mut joined = String::new();
        walk(model, |node| {
            joined.clear();
            push_path(&mut joined, node.path().segments(), false);
            let Some(slot) = nodes.get_mut(joined.as_str()) else {
                return;
            };
            let weight = node
                .downcast_ref::<Linear>()
                .map(|linear| linear.weight.id)
                .or_else(|| {
                    node.downcast_ref::<Embedding>()
                        .map(|table| table.weight.id)
                });
            *slot = Some((node.kind(), weight));
        });
        let mut weights_of: HashMap<&str, Vec<String>> = HashMap::new();
        for param in params
            .params()
            .iter()
            .filter(|param| param.shape.len() == 2)
        {
            weights_of
                .entry(param.tree_module())
                .or_default()
                .push(param.record.clone());
        }
        let mut layers = Vec::new();
        let mut seen = HashSet::new();
        for path in &paths {
            let path = path.as_ref();
            let Some(&Some((kind, weight))) = nodes.get(path) else {
                return Err(BurnError::UnknownLayer {
                    path: path.to_owned(),
                });
            };
            let Some(kind) = kind else {
                return Err(BurnError::NotALayer {
                    path: path.to_owned(),
                });
            };
            let by_id = weight
                .and_then(|id| record_of.get(&id))
                .map(|record| vec![(*record).to_owned()]);
            let Some(weights) = by_id.or_else(|| weights_of.get(path).cloned()) else {
                return Err(BurnError::NoAdaptableWeight {
                    path: path.to_owned(),
                    kind,
                });
            };
            if seen.insert(path.to_owned()) {
                layers.push(SelectedLayer {
                    path: path.to_owned(),
                    kind,
                    weights,
                });
            }
        }
        Ok(LoraSelection { layers })
    }

    /// Selects the layers a resolved target spec chose.
    ///
    /// # Errors
    ///
    /// As [`from_paths`](Self::from_paths).
    pub fn from_resolution<M: Module + ModuleTree>(
        model: &M,
        resolution: &Resolution,
    ) -> Result<Self, BurnError> {
        LoraSelection::from_paths(model, resolution.paths())
    }

    /// Resolves `spec` against `model` and selects the layers it chose.
    ///
    /// # Errors
    ///
    /// [`BurnError::Target`] when the spec does not resolve; then as
    /// [`from_paths`](Self::from_paths).
    pub fn resolve<M: Module + ModuleTree>(
        model: &M,
        spec: &TargetSpec,
    ) -> Result<Self, BurnError> {
        LoraSelection::from_resolution(model, &spec.resolve(model)?)
    }

    /// The selected layers, in the order given.
    #[must_use]
    pub fn layers(&self) -> &[SelectedLayer] {
        &self.layers
    }

    /// The module-tree paths of the selected layers.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|layer| layer.path.as_str())
    }

    /// The record paths of every weight to adapt.
    pub fn weight_paths(&self) -> impl Iterator<Item = &str> {
        self.layers
            .iter()
            .flat_map(|layer| layer.weights.iter().map(String::as_str))
    }

    /// The burn group of exactly the selected weights, by record path, for
    /// `Lora::set_param_group`.
    #[must_use]
    pub fn param_group(&self) -> ParamGroup {
        ParamGroup::from_paths(self.weight_paths().collect())
    }

    /// `Lora::new(rank, alpha)` restricted to the selected weights.
    #[must_use]
    pub fn lora(&self, rank: usize, alpha: f64) -> Lora {
        Lora::new(rank, alpha).set_param_group(self.param_group())
    }
}

/// LoRA with a rank and alpha per layer: one burn [`Lora`] per distinct `(rank, alpha)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoraPlan {
    groups: Vec<PlanGroup>,
    /// Each planned weight's group.
    planned: HashMap<String, usize>,
    /// The expert banks, which take factors of their own (their weight is 3-D, no burn `Lora`
    /// target).
    banks: Vec<PlannedBank>,
}

/// An expert bank of a [`LoraPlan`]: its path, rank and alpha (scaling by `alpha / rank`).
#[derive(Clone, Debug, PartialEq)]
struct PlannedBank {
    path: String,
    rank: usize,
    alpha: f64,
}

/// The weights of a [`LoraPlan`] that share one rank and alpha.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanGroup {
    /// The adapters' rank.
    pub rank: usize,
    /// The adapters' alpha; they scale by `alpha / rank`.
    pub alpha: f64,
    /// The record paths of the weights to adapt.
    pub weights: Vec<String>,
}

impl LoraPlan {
    /// An empty plan: applying it freezes the model and adapts nothing.
    #[must_use]
    pub fn new() -> Self {
        LoraPlan::default()
    }

    /// Adds `selection`'s layers with this rank and alpha.
    ///
    /// # Errors
    ///
    /// [`BurnError::Overlap`] when a weight is already in the plan with another rank or alpha,
    /// and [`BurnError::ZeroRank`] for a rank of 0.
    pub fn with(
        mut self,
        selection: &LoraSelection,
        rank: usize,
        alpha: f64,
    ) -> Result<Self, BurnError> {
        if rank == 0 {
            return Err(BurnError::ZeroRank);
        }
        let same =
            |group: &PlanGroup| group.rank == rank && group.alpha.to_bits() == alpha.to_bits();
        let index = self
            .groups
            .iter()
            .position(same)
            .unwrap_or(self.groups.len());
        for weight in selection.weight_paths() {
            if let Some(&other) = self.planned.get(weight)
                && other != index
            {
                let other = &self.groups[other];
                return Err(BurnError::Overlap {
                    path: weight.to_owned(),
                    first: (other.rank, other.alpha),
                    second: (rank, alpha),
                });
            }
        }
        if index == self.groups.len() {
            self.groups.push(PlanGroup {
                rank,
                alpha,
                weights: Vec::new(),
            });
        }
        for weight in selection.weight_paths() {
            if self.planned.insert(weight.to_owned(), index).is_none() {
                self.groups[index].weights.push(weight.to_owned());
            }
        }
        Ok(self)
    }

    /// The plan of a resolved target spec: each layer with the rank and alpha the spec gave it.
    /// Expert banks ([`ExpertBank`], kind `grouped_linear`) get factors of their own in PEFT's
    /// `ParamWrapper` layout when the plan is applied.
    ///
    /// # Errors
    ///
    /// As [`LoraSelection::from_paths`] (a `grouped_linear` layer that is no [`ExpertBank`] has
    /// no adaptable weight), and [`BurnError::ZeroRank`].
    pub fn from_resolution<M: Module + ModuleTree>(
        model: &M,
        resolution: &Resolution,
    ) -> Result<Self, BurnError> {
        let (banks, layers): (Vec<_>, Vec<_>) = resolution
            .layers
            .iter()
            .partition(|layer| layer.kind == Kind::GroupedLinear);
        let selection =
            LoraSelection::from_paths(model, layers.iter().map(|layer| layer.path.as_str()))?;
        let mut plan = LoraPlan::new();
        for (layer, selected) in layers.iter().zip(&selection.layers) {
            let one = LoraSelection {
                layers: vec![selected.clone()],
            };
            let rank = usize::try_from(layer.rank).unwrap_or(usize::MAX);
            plan = plan.with(&one, rank, layer.alpha)?;
        }
        let mut missing: HashSet<&str> = banks.iter().map(|bank| bank.path.as_str()).collect();
        let mut joined = String::new();
        walk(model, |node| {
            if missing.is_empty() || node.downcast_ref::<ExpertBank>().is_none() {
                return;
            }
            joined.clear();
            push_path(&mut joined, node.path().segments(), false);
            missing.remove(joined.as_str());
        });
        if let Some(bank) = banks
            .iter()
            .find(|bank| missing.contains(bank.path.as_str()))
        {
            return Err(BurnError::NoAdaptableWeight {
                path: bank.path.clone(),
                kind: bank.kind,
            });
        }
        for bank in banks {
            if bank.rank == 0 {
                return Err(BurnError::ZeroRank);
            }
            plan.banks.push(PlannedBank {
                path: bank.path.clone(),
                rank: usize::try_from(bank.rank).unwrap_or(usize::MAX),
                alpha: bank.alpha,
            });
        }
        Ok(plan)
    }

    /// Resolves `spec` against `model` and plans its layers with their ranks and alphas.
    ///
    /// # Errors
    ///
    /// [`BurnError::Target`] when the spec does not resolve; then as
    /// [`from_resolution`](Self::from_resolution).
    pub fn resolve<M: Module + ModuleTree>(
        model: &M,
        spec: &TargetSpec,
    ) -> Result<Self, BurnError> {
        LoraPlan::from_resolution(model, &spec.resolve(model)?)
    }

    /// The plan as one burn `Lora`, for `model.apply_lora(...)`, when every layer has the same
    /// rank and alpha.
    ///
    /// # Errors
    ///
    /// [`BurnError::PerLayerRanks`] when the plan has several `(rank, alpha)` groups: a burn
    /// `Lora` carries one rank and one alpha, so use [`apply`](Self::apply) instead; and
    /// [`BurnError::EmptyPlan`] when it has none.
    pub fn single(&self) -> Result<Lora, BurnError> {
        match self.loras().as_slice() {
            [] => Err(BurnError::EmptyPlan),
            [lora] => Ok(lora.clone()),
            several => Err(BurnError::PerLayerRanks {
                groups: several.iter().map(|lora| (lora.rank, lora.alpha)).collect(),
            }),
        }
    }

    /// The plan's groups, one per distinct `(rank, alpha)`, in the order they were added.
    #[must_use]
    pub fn groups(&self) -> &[PlanGroup] {
        &self.groups
    }

    /// The burn `Lora` values of the plan, one per group.
    #[must_use]
    pub fn loras(&self) -> Vec<Lora> {
        self.groups
            .iter()
            .map(|group| {
                Lora::new(group.rank, group.alpha)
                    .set_param_group(ParamGroup::from_paths(group.weights.clone()))
            })
            .collect()
    }

    /// Attaches the planned adapters in one pass of burn's `apply_reparameterization`, freezing
    /// every base parameter, as `Module::apply_lora` does; expert banks get fresh factors of
    /// their own: `A` uniform in ±1/√in (Kaiming-uniform with a = √5, as PEFT), `B` zero.
    #[must_use]
    pub fn apply<M: Module + ModuleTree>(&self, model: M) -> M {
        let mut model = model.apply_reparameterization(PerLayer {
            loras: self.loras(),
        });
        if self.banks.is_empty() {
            return model;
        }
        let banks: HashMap<&str, &PlannedBank> = self
            .banks
            .iter()
            .map(|bank| (bank.path.as_str(), bank))
            .collect();
        let mut joined = String::new();
        crate::walk::walk_mut(&mut model, |node| {
            if node.downcast_mut::<ExpertBank>().is_none() {
                return;
            }
            joined.clear();
            push_path(&mut joined, node.path().segments(), false);
            if let (Some(planned), Some(bank)) = (
                banks.get(joined.as_str()),
                node.downcast_mut::<ExpertBank>(),
            ) {
                bank.lora = Some(fresh_factors(bank, planned));
            }
        });
        model
    }
}

/// A bank's fresh trainable factors: `A: [E·r, in]` uniform in ±1/√in, `B: [out, r·E]` zero.
fn fresh_factors(bank: &ExpertBank, planned: &PlannedBank) -> ExpertLora {
    let device = bank.device();
    let (experts, input, output) = (bank.num_experts(), bank.in_features(), bank.out_features());
    #[expect(
        clippy::cast_precision_loss,
        reason = "layer widths and ranks are far below 2^52"
    )]
    let (bound, rank) = (1.0 / (input as f64).sqrt(), planned.rank as f64);
    let a = Tensor::<2>::random(
        [experts * planned.rank, input],
        burn::tensor::Distribution::Uniform(-bound, bound),
        &device,
    );
    let b = Tensor::<2>::zeros([output, planned.rank * experts], &device);
    ExpertLora {
        a: Param::from_tensor(a),
        b: Param::from_tensor(b),
        experts,
        scale: planned.alpha / rank,
    }
}

/// Hands each parameter to the first `Lora` whose group matches it; freezes the others.
struct PerLayer {
    loras: Vec<Lora>,
}

impl Reparameterizer for PerLayer {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        match self
            .loras
            .iter_mut()
            .find(|lora| lora.param_group.matches(&param.id, Some(path)))
        {
            Some(lora) => lora.reparameterize(path, param),
            None => (param.set_require_grad(false), None),
        }
    }
}

/// Attaches fresh trainable adapters (burn's own `LoraAdapter`, base weights frozen, as
/// `Module::apply_lora` does) to every layer `config` selects, with the rank and alpha its
/// patterns give each layer and its rsLoRA scale; returns the model and the adapted layers in
/// walk order. The same config then saves the adapter with
/// [`save_peft_adapter`](crate::burn::save_peft_adapter); candle's `apply_lora` takes the same
/// config.
///
/// # Errors
///
/// [`PeftError::Config`] / [`PeftError::Refused`] for a config that does not validate,
/// [`PeftError::Selection`] when its selection does not resolve, [`PeftError::NotAdaptable`] for
/// a selected layer without a 2-D weight. Everything is checked before the model is taken:
/// call [`plan_lora`] first to keep the model when the config does not fit.
pub fn apply_lora<M: Module + ModuleTree>(
    model: M,
    config: &LoraConfig,
) -> Result<(M, Vec<AdaptedLayer>), PeftError> {
    let (plan, adapted) = plan_lora(&model, config)?;
    Ok((plan.apply(model), adapted))
}

/// The [`LoraPlan`] that [`apply_lora`] applies, and the layers it adapts; the model is only
/// read.
///
/// # Errors
///
/// As [`apply_lora`].
pub fn plan_lora<M: Module + ModuleTree>(
    model: &M,
    config: &LoraConfig,
) -> Result<(LoraPlan, Vec<AdaptedLayer>), PeftError> {
    let file = std::path::Path::new(ADAPTER_CONFIG_FILE);
    let spec = config.checked_spec(file)?;
    let resolution = spec.resolve(model).map_err(|source| PeftError::Selection {
        file: file.to_owned(),
        source,
    })?;
    if config.lora_dropout > 0.0
        && let Some(bank) = resolution
            .layers()
            .iter()
            .find(|layer| layer.kind == Kind::GroupedLinear)
    {
        return Err(crate::peft::bank_dropout_error(&bank.path, "ExpertBank"));
    }
    // burn's `Lora` scales by alpha / r; rsLoRA's alpha / √r is (alpha · √r) / r.
    let mut scaled = resolution.clone();
    if config.use_rslora {
        for layer in &mut scaled.layers {
            layer.alpha *= f64::from(layer.rank).sqrt();
        }
    }
    let plan = LoraPlan::from_resolution(model, &scaled).map_err(|error| match error {
        BurnError::NoAdaptableWeight { path, kind } => PeftError::NotAdaptable {
            key: path.clone(),
            path,
            type_name: kind.name(),
            what: "has no 2-D weight for burn's LoRA to adapt",
        },
        BurnError::UnknownLayer { path } | BurnError::NotALayer { path } => {
            PeftError::NotALayer { path }
        }
        other => PeftError::Tensor {
            path: String::new(),
            message: other.to_string(),
        },
    })?;
    refuse_adapted(model, &resolution)?;
    let adapted = resolution
        .layers
        .iter()
        .map(|layer| AdaptedLayer {
            path: layer.path.clone(),
            rank: layer.rank,
            alpha: layer.alpha,
            scale: config.scale(layer.rank, layer.alpha),
        })
        .collect();
    Ok((plan, adapted))
}

/// [`PeftError::DuplicateAdapter`] for the first selected layer that already has an adapter: a
/// burn weight carries one, and applying again would freeze the first one's factors.
fn refuse_adapted<M: ModuleTree + ?Sized>(
    model: &M,
    resolution: &Resolution,
) -> Result<(), PeftError> {
    let selected: HashSet<&str> = resolution.paths().collect();
    let mut adapted = None;
    let mut joined = String::new();
    walk(model, |node| {
        if adapted.is_some() || !node.is_layer() {
            return;
        }
        let has_adapter = match weight_ref(node) {
            Some((weight, ..)) => weight.adapter().is_some(),
            None => node
                .downcast_ref::<ExpertBank>()
                .is_some_and(|bank| bank.lora.is_some()),
        };
        if has_adapter {
            joined.clear();
            push_path(&mut joined, node.path().segments(), false);
            if selected.contains(joined.as_str()) {
                adapted = Some(joined.clone());
            }
        }
    });
    match adapted {
        Some(path) => Err(PeftError::DuplicateAdapter {
            path,
            adapter: crate::peft::DEFAULT_ADAPTER.to_owned(),
        }),
        None => Ok(()),
    }
}
