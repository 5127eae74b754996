//! PEFT LoRA files for burn models: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! PEFT stores, for each adapted linear at module path `p`, `base_model.model.p.lora_A.weight`
//! with shape `[r, in]` and `base_model.model.p.lora_B.weight` with shape `[out, r]` (keys are also
//! accepted without the `base_model.model.` prefix), and adds `scaling · (x Aᵀ) Bᵀ` to the layer's
//! output, `scaling = lora_alpha / r` (`lora_alpha / √r` with `use_rslora`). burn keeps a linear's
//! weight as `[in, out]` and its LoRA factors as `a: [in, r]`, `b: [r, out]` at the record paths
//! `<weight>.lora.a` / `<weight>.lora.b`, with `scale · a b` added to the weight. So
//! `a = Aᵀ`, `b = Bᵀ` and `scale = scaling`. An embedding's factors are
//! `base_model.model.p.lora_embedding_A` (`[r, entries]`) and `lora_embedding_B` (`[dim, r]`);
//! burn's table is `[entries, dim]`, so the same transposes apply.
//!
//! Module paths are module-tree paths (enum variants add no segment, as in PyTorch). Loading
//! validates the whole file against the model — unknown keys and modules, layers that are not
//! burn `Linear`s or `Embedding`s, factors named for the other kind, unpaired or repeated factors, shapes, dtypes, layers the config's `target_modules` selects
//! but the file lacks, layers that already carry an adapter — and mutates nothing unless all of it
//! fits. It then attaches each adapter live (burn's own `LoraAdapter`, base weight frozen, factors
//! trainable) or merges it into the weight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use burn::module::{LoraAdapter, Module, Param, Reparameterizer};
use burn::nn::{Embedding, Linear};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::{Value, json};

use crate::ModuleTree;
use crate::burn::error::PeftError;
use crate::kind::Kind;
use crate::path::push_path;
use crate::target::{DEFAULT_ALPHA, DEFAULT_RANK, Resolution, ResolvedLayer, TargetSpec};
use crate::walk::{Node, NodeMut, walk, walk_mut};

use crate::adapter_file::parse_factor_name;
pub use crate::adapter_file::{
    ADAPTER_CONFIG_FILE as CONFIG_FILE, ADAPTER_WEIGHTS_FILE as WEIGHTS_FILE, PEFT_PREFIX,
};

const LORA_A: &str = ".lora_A.weight";
const LORA_B: &str = ".lora_B.weight";
const EMBEDDING_A: &str = ".lora_embedding_A";
const EMBEDDING_B: &str = ".lora_embedding_B";

/// How PEFT names a layer's factors: a linear's (`lora_A.weight`) or an embedding's
/// (`lora_embedding_A`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Naming {
    Linear,
    Embedding,
}

impl Naming {
    fn suffixes(self) -> (&'static str, &'static str) {
        match self {
            Naming::Linear => (LORA_A, LORA_B),
            Naming::Embedding => (EMBEDDING_A, EMBEDDING_B),
        }
    }
}

/// The module, factor (`true` for A) and naming of a key, with or without PEFT's prefix and an
/// adapter name (see [`parse_factor_name`]).
fn split_key(name: &str) -> Option<(&str, bool, Naming)> {
    let factor = parse_factor_name(name)?;
    let naming = if factor.embedding {
        Naming::Embedding
    } else {
        Naming::Linear
    };
    Some((factor.path, factor.is_a, naming))
}

/// PEFT's key for a burn LoRA factor of a linear layer: `<layer>.weight.lora.a` becomes
/// `base_model.model.<layer>.lora_A.weight`, `.lora.b` becomes `lora_B.weight`. (An embedding's
/// factors are named `lora_embedding_A` / `lora_embedding_B`; a path alone does not tell the two
/// apart.)
///
/// The path is in tree form (see [`PathMap`](crate::burn::PathMap), whose `tree` paths are
/// these once enum variant names are dropped); `None` for a path that is not a factor of a
/// layer's `weight`.
///
/// ```
/// use moduletree::burn::{lora_factor_to_peft_key, peft_key_to_lora_factor};
///
/// let key = lora_factor_to_peft_key("blocks.0.fc2.weight.lora.a").unwrap();
/// assert_eq!(key, "base_model.model.blocks.0.fc2.lora_A.weight");
/// assert_eq!(peft_key_to_lora_factor(&key).unwrap(), "blocks.0.fc2.weight.lora.a");
/// assert_eq!(peft_key_to_lora_factor("blocks.0.fc2.lora_B.weight").unwrap(), "blocks.0.fc2.weight.lora.b");
/// assert_eq!(lora_factor_to_peft_key("blocks.0.fc2.weight"), None);
/// ```
#[must_use]
pub fn lora_factor_to_peft_key(path: &str) -> Option<String> {
    let (layer, factor) = match (
        path.strip_suffix(".weight.lora.a"),
        path.strip_suffix(".weight.lora.b"),
    ) {
        (Some(layer), _) => (layer, LORA_A),
        (_, Some(layer)) => (layer, LORA_B),
        _ => return None,
    };
    (!layer.is_empty()).then(|| format!("{PEFT_PREFIX}{layer}{factor}"))
}

/// The burn LoRA factor path (tree form) of a linear's PEFT key, with or without PEFT's prefix;
/// the inverse of [`lora_factor_to_peft_key`]. `None` for an embedding's key.
#[must_use]
pub fn peft_key_to_lora_factor(key: &str) -> Option<String> {
    match split_key(key)? {
        (layer, is_a, Naming::Linear) => Some(format!(
            "{layer}.weight.lora.{}",
            if is_a { "a" } else { "b" }
        )),
        (_, _, Naming::Embedding) => None,
    }
}

/// How a loaded adapter joins the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// Attached as burn `LoraAdapter`s: the weight reads `base + scale · a b`, the base is
    /// frozen, the factors are trainable parameters.
    Live,
    /// Added into the weights: `W += scale · a b`; no adapter remains.
    Merged,
}

/// A parsed PEFT LoRA adapter: its config and its factors, in PEFT's layout.
#[derive(Clone, Debug)]
pub struct PeftAdapter {
    config: PeftConfig,
    layers: BTreeMap<String, Factors>,
}

/// The parts of `adapter_config.json` that change what the adapter computes or selects.
///
/// The selection fields (`target_modules`, `exclude_modules`, `layers_to_transform`,
/// `layers_pattern`, `r`, `lora_alpha`, `rank_pattern`, `alpha_pattern`) are read as a
/// [`TargetSpec`], with its reading of PEFT's rules (see [`crate::target::peft`]).
#[derive(Clone, Debug)]
pub struct PeftConfig {
    /// The layers the adapter targets, with their ranks and alphas.
    pub spec: TargetSpec,
    /// `use_rslora`: scale by `alpha / √r` instead of `alpha / r`.
    pub use_rslora: bool,
}

/// One layer's factors as read from the file.
#[derive(Clone, Debug)]
struct Factors {
    a: Option<Factor>,
    b: Option<Factor>,
    naming: Naming,
}

#[derive(Clone, Debug)]
struct Factor {
    key: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// One layer an adapter was loaded into or saved from.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptedLayer {
    /// The layer's module-tree path.
    pub path: String,
    /// The adapter's rank.
    pub rank: usize,
    /// The scale of the adapter's product (`alpha / rank`, or `alpha / √rank` with rsLoRA).
    pub scale: f64,
}

impl PeftConfig {
    fn from_json(value: &Value, file: &Path) -> Result<Self, PeftError> {
        let Some(object) = value.as_object() else {
            return Err(PeftError::Config {
                path: file.to_owned(),
                message: "expected a JSON object".to_owned(),
            });
        };
        if let Some(kind) = object.get("peft_type")
            && kind.as_str() != Some("LORA")
        {
            return Err(PeftError::Unsupported {
                key: "peft_type",
                value: kind.to_string(),
                reason: "only LORA adapters are supported",
            });
        }
        for (key, reason) in [
            (
                "use_dora",
                "DoRA needs a magnitude vector burn's LoraAdapter does not have",
            ),
            (
                "fan_in_fan_out",
                "weights stored transposed (GPT-2 Conv1D) are not supported",
            ),
            ("lora_bias", "LoRA bias tensors are not supported"),
        ] {
            if let Some(value) = object.get(key)
                && value.as_bool() == Some(true)
            {
                return Err(PeftError::Unsupported {
                    key,
                    value: value.to_string(),
                    reason,
                });
            }
        }
        if let Some(value) = object.get("bias")
            && !value.is_null()
            && value.as_str() != Some("none")
        {
            return Err(PeftError::Unsupported {
                key: "bias",
                value: value.to_string(),
                reason: "only \"none\" is supported",
            });
        }
        let spec = TargetSpec::from_peft_value(value).map_err(|error| PeftError::Config {
            path: file.to_owned(),
            message: error.to_string(),
        })?;
        let use_rslora = object
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(PeftConfig { spec, use_rslora })
    }

    /// The scale PEFT gives a layer of this rank and alpha.
    fn scale(&self, rank: u32, alpha: f64) -> f64 {
        let rank = f64::from(rank);
        if self.use_rslora {
            alpha / rank.sqrt()
        } else {
            alpha / rank
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PeftError> {
    fs::read(path).map_err(|source| PeftError::Io {
        path: path.to_owned(),
        source,
    })
}

fn to_f32(view: &TensorView<'_>, key: &str) -> Result<Vec<f32>, PeftError> {
    let dtype = match view.dtype() {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        other => {
            return Err(PeftError::Dtype {
                key: key.to_owned(),
                dtype: format!("{other:?}"),
            });
        }
    };
    TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype)
        .try_into_vec_as::<f32>()
        .map_err(|error| PeftError::Dtype {
            key: key.to_owned(),
            dtype: format!("{:?} ({error:?})", view.dtype()),
        })
}

impl PeftAdapter {
    /// Reads `adapter_config.json` and `adapter_model.safetensors` from `dir`.
    ///
    /// # Errors
    ///
    /// I/O, JSON and safetensors errors; unsupported config settings; keys that are not LoRA
    /// factors; dtypes other than F32, F16 and BF16.
    pub fn read(dir: impl AsRef<Path>) -> Result<Self, PeftError> {
        let dir = dir.as_ref();
        let config_path = dir.join(CONFIG_FILE);
        let config: Value =
            serde_json::from_slice(&read(&config_path)?).map_err(|error| PeftError::Config {
                path: config_path.clone(),
                message: error.to_string(),
            })?;
        let config = PeftConfig::from_json(&config, &config_path)?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = read(&weights_path)?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|error| PeftError::Safetensors {
            path: weights_path.clone(),
            message: error.to_string(),
        })?;
        let mut layers: BTreeMap<String, Factors> = BTreeMap::new();
        for (key, view) in tensors.tensors() {
            let Some((module, is_a, naming)) = split_key(&key) else {
                return Err(PeftError::UnknownTensor { key });
            };
            let factor = Factor {
                values: to_f32(&view, &key)?,
                shape: view.shape().to_vec(),
                key: key.clone(),
            };
            let entry = layers.entry(module.to_owned()).or_insert(Factors {
                a: None,
                b: None,
                naming,
            });
            let same_slot = if is_a { &entry.a } else { &entry.b };
            let clash = match same_slot {
                Some(first) => Some(first.key.clone()),
                None if entry.naming != naming => entry
                    .a
                    .as_ref()
                    .or(entry.b.as_ref())
                    .map(|first| first.key.clone()),
                None => None,
            };
            if let Some(first) = clash {
                return Err(PeftError::Conflict {
                    path: module.to_owned(),
                    first,
                    second: key,
                });
            }
            if is_a {
                entry.a = Some(factor);
            } else {
                entry.b = Some(factor);
            }
        }
        Ok(PeftAdapter { config, layers })
    }

    /// The adapter's config.
    #[must_use]
    pub fn config(&self) -> &PeftConfig {
        &self.config
    }

    /// The module paths the file holds factors for, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.layers.keys().map(String::as_str)
    }

    /// Loads the adapter into `model`'s burn `Linear` and `Embedding` layers, live or merged.
    ///
    /// Everything is checked before anything changes; on error the model is as it was.
    ///
    /// # Errors
    ///
    /// [`PeftError::Target`] when the config's targets do not resolve against `model`;
    /// [`PeftError::UnknownModule`], [`PeftError::NotALinear`], [`PeftError::WrongNaming`],
    /// [`PeftError::Unpaired`], [`PeftError::Untargeted`], [`PeftError::Shape`],
    /// [`PeftError::AlreadyAdapted`] per file entry; [`PeftError::Missing`] for a targeted layer
    /// without tensors; [`PeftError::ReadOnly`] for a targeted layer behind an `Arc`.
    pub fn load_into<M: ModuleTree + ?Sized>(
        &self,
        model: &mut M,
        mode: LoadMode,
    ) -> Result<Vec<AdaptedLayer>, PeftError> {
        let plan = self.plan(model)?;
        let mut by_path: HashMap<&str, &Planned> = plan
            .iter()
            .map(|planned| (planned.path.as_str(), planned))
            .collect();
        let mut buffer = String::new();
        // A layer behind an `Arc` can be read but not changed: find out before changing any.
        let mut writable: HashSet<&str> = HashSet::new();
        walk_mut(model, |node| {
            if let Some(path) = layer_path(node, &mut buffer)
                && let Some((&planned, _)) = by_path.get_key_value(path)
                && weight_mut(node).is_some()
            {
                writable.insert(planned);
            }
        });
        if let Some(planned) = plan
            .iter()
            .find(|planned| !writable.contains(planned.path.as_str()))
        {
            return Err(PeftError::ReadOnly {
                path: planned.path.clone(),
            });
        }
        walk_mut(model, |node| {
            if let Some(path) = layer_path(node, &mut buffer)
                && let Some(planned) = by_path.remove(path)
                && let Some(weight) = weight_mut(node)
            {
                apply(weight, planned, mode);
            }
        });
        Ok(plan
            .into_iter()
            .map(|planned| AdaptedLayer {
                path: planned.path,
                rank: planned.rank,
                scale: planned.scale,
            })
            .collect())
    }

    /// Checks every factor against the model; returns what to do per layer, in walk order.
    fn plan<M: ModuleTree + ?Sized>(&self, model: &M) -> Result<Vec<Planned>, PeftError> {
        let resolution = self.config.spec.resolve(model).map_err(PeftError::Target)?;
        let mut nodes: Vec<ModelNode> = Vec::new();
        walk(model, |node| {
            let site = weight_ref(node).map(|(weight, naming)| {
                let [d_in, d_out] = weight.base().dims();
                (d_in, d_out, weight.adapter().is_some(), naming)
            });
            nodes.push(ModelNode {
                path: node.path().to_string(),
                type_name: node.type_name(),
                is_layer: node.is_layer(),
                site,
            });
        });
        let node_at: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| (node.path.as_str(), index))
            .collect();
        let targeted: HashMap<&str, &ResolvedLayer> = resolution
            .layers
            .iter()
            .map(|layer| (layer.path.as_str(), layer))
            .collect();
        let mut plan = Vec::new();
        for (path, factors) in &self.layers {
            let key = factors
                .a
                .as_ref()
                .or(factors.b.as_ref())
                .map_or_else(|| path.clone(), |factor| factor.key.clone());
            let Some(node) = node_at.get(path.as_str()).map(|&index| &nodes[index]) else {
                return Err(PeftError::UnknownModule {
                    key,
                    path: path.clone(),
                    suggestions: same_name(path, &nodes),
                });
            };
            let Some((d_in, d_out, adapted, naming)) = node.site else {
                return Err(PeftError::NotALinear {
                    key,
                    path: path.clone(),
                    type_name: node.type_name,
                });
            };
            if naming != factors.naming {
                return Err(PeftError::WrongNaming {
                    key,
                    path: path.clone(),
                    type_name: node.type_name,
                });
            }
            let (a, b) = match (&factors.a, &factors.b) {
                (Some(a), Some(b)) => (a, b),
                (Some(present), None) | (None, Some(present)) => {
                    let (a_suffix, b_suffix) = factors.naming.suffixes();
                    let (present_suffix, missing_suffix) = if factors.a.is_some() {
                        (a_suffix, b_suffix)
                    } else {
                        (b_suffix, a_suffix)
                    };
                    return Err(PeftError::Unpaired {
                        path: path.clone(),
                        present: present.key.clone(),
                        missing: present.key.strip_suffix(present_suffix).map_or_else(
                            || format!("{path}{missing_suffix}"),
                            |head| format!("{head}{missing_suffix}"),
                        ),
                    });
                }
                (None, None) => continue,
            };
            let Some(target) = targeted.get(path.as_str()) else {
                return Err(PeftError::Untargeted {
                    key,
                    path: path.clone(),
                });
            };
            let rank = usize::try_from(target.rank).unwrap_or(usize::MAX);
            let scale = self.config.scale(target.rank, target.alpha);
            for (factor, expected) in [(a, vec![rank, d_in]), (b, vec![d_out, rank])] {
                if factor.shape != expected {
                    return Err(PeftError::Shape {
                        key: factor.key.clone(),
                        path: path.clone(),
                        expected,
                        found: factor.shape.clone(),
                    });
                }
            }
            if adapted {
                return Err(PeftError::AlreadyAdapted { path: path.clone() });
            }
            plan.push(Planned {
                path: path.clone(),
                rank,
                scale,
                a: a.values.clone(),
                b: b.values.clone(),
                d_in,
                d_out,
            });
        }
        if let Some(layer) = resolution
            .layers
            .iter()
            .find(|layer| !self.layers.contains_key(&layer.path))
        {
            return Err(PeftError::Missing {
                path: layer.path.clone(),
            });
        }
        plan.sort_by_key(|planned| node_at.get(planned.path.as_str()).copied());
        Ok(plan)
    }
}

/// A layer's path, joined into `buffer` (one buffer for a whole walk, not a string per node);
/// `None` for a node that is not a layer.
fn layer_path<'b>(node: &NodeMut<'_, '_>, buffer: &'b mut String) -> Option<&'b str> {
    if !node.is_layer() {
        return None;
    }
    buffer.clear();
    push_path(buffer, node.path().segments(), false);
    Some(buffer)
}

/// Up to three module paths of the model that end with the same name as `path`.
fn same_name(path: &str, nodes: &[ModelNode]) -> Vec<String> {
    let name = last_segment(path);
    nodes
        .iter()
        .filter(|node| node.is_layer && last_segment(&node.path) == name)
        .take(3)
        .map(|node| node.path.clone())
        .collect()
}

struct ModelNode {
    path: String,
    type_name: &'static str,
    is_layer: bool,
    /// The weight's `[in, out]` (`[entries, dim]` for an embedding), whether it carries an
    /// adapter, and how PEFT names its factors.
    site: Option<(usize, usize, bool, Naming)>,
}

struct Planned {
    path: String,
    rank: usize,
    scale: f64,
    /// PEFT's `A`, `[rank, in]`, row-major.
    a: Vec<f32>,
    /// PEFT's `B`, `[out, rank]`, row-major.
    b: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

/// Gives an adapter to the one parameter it is applied to (a 2-D weight), freezing that base.
struct Attach(Option<LoraAdapter>);

impl Reparameterizer for Attach {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(
        &mut self,
        _path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        (param.set_require_grad(false), self.0.take())
    }
}

/// The 2-D weight PEFT adapts at a node: a burn `Linear`'s or `Embedding`'s.
fn weight_ref<'n>(node: &Node<'n, '_>) -> Option<(&'n Param<Tensor<2>>, Naming)> {
    if let Some(linear) = node.downcast_ref::<Linear>() {
        return Some((&linear.weight, Naming::Linear));
    }
    node.downcast_ref::<Embedding>()
        .map(|embedding| (&embedding.weight, Naming::Embedding))
}

fn weight_mut<'x>(node: &'x mut NodeMut<'_, '_>) -> Option<&'x mut Param<Tensor<2>>> {
    if node.downcast_mut::<Linear>().is_some() {
        return node
            .downcast_mut::<Linear>()
            .map(|linear| &mut linear.weight);
    }
    node.downcast_mut::<Embedding>()
        .map(|embedding| &mut embedding.weight)
}

fn apply(weight_slot: &mut Param<Tensor<2>>, planned: &Planned, mode: LoadMode) {
    let device = weight_slot.lazy_device();
    let base_dtype = weight_slot.base().dtype();
    let cast = |tensor: Tensor<2>| {
        if base_dtype.is_float() && base_dtype != DType::F32 {
            tensor.cast(FloatDType::from(base_dtype))
        } else {
            tensor
        }
    };
    // burn's a = Aᵀ ([in, r]) and b = Bᵀ ([r, out]).
    let a = cast(
        Tensor::<2>::from_data(
            TensorData::new(planned.a.clone(), [planned.rank, planned.d_in]),
            &device,
        )
        .transpose(),
    );
    let b = cast(
        Tensor::<2>::from_data(
            TensorData::new(planned.b.clone(), [planned.d_out, planned.rank]),
            &device,
        )
        .transpose(),
    );
    let weight = weight_slot.clone();
    *weight_slot = match mode {
        LoadMode::Live => weight.apply_reparameterization(Attach(Some(LoraAdapter {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            scale: planned.scale,
        }))),
        LoadMode::Merged => {
            let delta = a.matmul(b).mul_scalar(planned.scale);
            weight.map(|base| base + delta)
        }
    };
}

/// Reads the PEFT adapter in `dir` and loads it into `model`, live or merged.
///
/// # Errors
///
/// See [`PeftAdapter::read`] and [`PeftAdapter::load_into`]; the model is unchanged on error.
pub fn load_peft<M: ModuleTree + ?Sized>(
    model: &mut M,
    dir: impl AsRef<Path>,
    mode: LoadMode,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    PeftAdapter::read(dir)?.load_into(model, mode)
}

/// Writes the LoRA adapters of `model`'s burn `Linear` and `Embedding` layers to `dir` in PEFT's
/// format.
///
/// `target_modules` lists the shortest path suffixes that select exactly the adapted layers
/// under PEFT's exact-or-suffix rule (see [`Resolution::to_peft_compact`]). The most common rank
/// and alpha become `r` and `lora_alpha`; layers that differ get `rank_pattern` /
/// `alpha_pattern` entries keyed by their full paths. Tensors are written as F32.
///
/// # Errors
///
/// [`PeftError::NoAdapters`] when no `Linear` or `Embedding` carries an adapter; I/O and safetensors errors.
pub fn save_peft<M: ModuleTree + ?Sized>(
    model: &M,
    dir: impl AsRef<Path>,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    let dir = dir.as_ref();
    let mut saved: Vec<Saved> = Vec::new();
    let mut failure = None;
    walk(model, |node| {
        let Some((weight, naming)) = weight_ref(node) else {
            return;
        };
        let Some(adapter) = weight.adapter() else {
            return;
        };
        let path = node.path().to_string();
        // PEFT's A = aᵀ ([r, in]) and B = bᵀ ([out, r]).
        let a = adapter.a.val().transpose();
        let b = adapter.b.val().transpose();
        let (a_shape, b_shape) = (a.dims().to_vec(), b.dims().to_vec());
        let rank = a_shape[0];
        #[allow(clippy::cast_precision_loss, reason = "ranks are far below 2^52")]
        let alpha = adapter.scale * rank as f64;
        match (
            a.into_data().try_into_vec_as::<f32>(),
            b.into_data().try_into_vec_as::<f32>(),
        ) {
            (Ok(a), Ok(b)) => saved.push(Saved {
                layer: ResolvedLayer {
                    path: path.clone(),
                    normalized: node.path().normalized().to_string().into(),
                    kind: node.kind().unwrap_or(Kind::Linear),
                    is_expert: node.is_expert(),
                    layer_index: node.layer_index(),
                    rank: u32::try_from(rank).unwrap_or(u32::MAX),
                    alpha,
                },
                adapted: AdaptedLayer {
                    path,
                    rank,
                    scale: adapter.scale,
                },
                a: (a_shape, a),
                b: (b_shape, b),
                naming,
            }),
            (Err(error), _) | (_, Err(error)) => {
                failure.get_or_insert(PeftError::Dtype {
                    key: path,
                    dtype: format!("{error:?}"),
                });
            }
        }
    });
    if let Some(error) = failure {
        return Err(error);
    }
    if saved.is_empty() {
        return Err(PeftError::NoAdapters);
    }
    let config = export_config(model, &saved);
    fs::create_dir_all(dir).map_err(|source| PeftError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let config_path = dir.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&config).map_err(|error| PeftError::Config {
        path: config_path.clone(),
        message: error.to_string(),
    })?;
    fs::write(&config_path, text + "\n").map_err(|source| PeftError::Io {
        path: config_path.clone(),
        source,
    })?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let bytes: Vec<(String, &[usize], Vec<u8>)> = saved
        .iter()
        .flat_map(|entry| {
            let path = &entry.adapted.path;
            [
                (
                    format!("{PEFT_PREFIX}{path}{}", entry.naming.suffixes().0),
                    entry.a.0.as_slice(),
                    le_bytes(&entry.a.1),
                ),
                (
                    format!("{PEFT_PREFIX}{path}{}", entry.naming.suffixes().1),
                    entry.b.0.as_slice(),
                    le_bytes(&entry.b.1),
                ),
            ]
        })
        .collect();
    let mut views = Vec::with_capacity(bytes.len());
    for (key, shape, data) in &bytes {
        let view = TensorView::new(Dtype::F32, shape.to_vec(), data).map_err(|error| {
            PeftError::Safetensors {
                path: weights_path.clone(),
                message: format!("{key}: {error}"),
            }
        })?;
        views.push((key.clone(), view));
    }
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    safetensors::serialize_to_file(views, Some(metadata), &weights_path).map_err(|error| {
        PeftError::Safetensors {
            path: weights_path.clone(),
            message: error.to_string(),
        }
    })?;
    Ok(saved.into_iter().map(|entry| entry.adapted).collect())
}

/// One adapter read from the model for saving.
struct Saved {
    layer: ResolvedLayer,
    adapted: AdaptedLayer,
    /// PEFT's `A`: shape and values.
    a: (Vec<usize>, Vec<f32>),
    /// PEFT's `B`: shape and values.
    b: (Vec<usize>, Vec<f32>),
    naming: Naming,
}

/// The `adapter_config.json` of these saved adapters of `model`.
fn export_config<M: ModuleTree + ?Sized>(model: &M, saved: &[Saved]) -> Value {
    let mut counts: Vec<((u32, u64), usize)> = Vec::new();
    for entry in saved {
        let key = (entry.layer.rank, entry.layer.alpha.to_bits());
        match counts.iter_mut().find(|(seen, _)| *seen == key) {
            Some((_, count)) => *count += 1,
            None => counts.push((key, 1)),
        }
    }
    // The first of the most common, so that ties go to the earliest layer.
    let mut common = (DEFAULT_RANK, DEFAULT_ALPHA.to_bits());
    let mut best = 0;
    for (key, count) in counts {
        if count > best {
            (common, best) = (key, count);
        }
    }
    let resolution = Resolution {
        layers: saved.iter().map(|entry| entry.layer.clone()).collect(),
        entries: Vec::new(),
        warnings: Vec::new(),
        rank: common.0,
        alpha: f64::from_bits(common.1),
    };
    let targets = resolution.to_peft_compact(model);
    json!({
        "peft_type": "LORA",
        "task_type": null,
        "base_model_name_or_path": null,
        "inference_mode": true,
        "r": targets.r,
        "lora_alpha": targets.lora_alpha,
        "lora_dropout": 0.0,
        "target_modules": targets.target_modules,
        "exclude_modules": null,
        "rank_pattern": targets.rank_pattern,
        "alpha_pattern": targets.alpha_pattern,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
    })
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

fn last_segment(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// The paths of the files an adapter occupies in `dir`.
#[must_use]
pub fn adapter_files(dir: impl AsRef<Path>) -> [PathBuf; 2] {
    let dir = dir.as_ref();
    [dir.join(CONFIG_FILE), dir.join(WEIGHTS_FILE)]
}
