//! PEFT adapters into burn models. Every rule (names, selection, pairing, shapes,
//! refusals, the saved config) is [`crate::peft`]'s; this file converts tensors between PEFT's
//! layout and burn's, and installs them.
//!
//! PEFT stores a linear's weight `[out, in]` and its factors `A: [r, in]`, `B: [out, r]`; burn
//! keeps the weight `[in, out]` and its `LoraAdapter` factors `a: [in, r]`, `b: [r, out]`, with
//! `scale · a b` added to the weight. So `a = Aᵀ`, `b = Bᵀ` and the scales are equal. An
//! embedding's table is `[entries, dim]` in both, with PEFT's `lora_embedding_A: [r, entries]`,
//! `lora_embedding_B: [dim, r]`: the same transposes apply. Module paths are module-tree paths
//! (enum variants add no segment, as in PyTorch).
//!
//! [`LoadMode::Attach`] attaches burn's own `LoraAdapter` to each weight (base frozen, factors
//! trainable); [`LoadMode::Merge`] adds the delta into the weight. Everything is checked before
//! anything changes; on error the model is as it was.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use burn::module::{LoraAdapter, Module, Param, Reparameterizer};
use burn::nn::{Embedding, Linear};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use crate::ModuleTree;
use crate::burn::bank::{ExpertBank, ExpertLora};
use crate::path::push_path;
use crate::peft::names::FactorNaming;
use crate::peft::{
    AdaptedLayer, Adapter, Attachment, LayerInfo, LayerShape, LoadMode, PeftError, PlannedFactors,
    RawTensor,
};
use crate::walk::{Node, NodeMut, walk, walk_mut};

/// A whole parameter to install: its name, PEFT-layout shape and values.
type Whole<'p> = (&'p str, Vec<usize>, Vec<f32>);

/// The adapter name burn's loads report: a burn weight holds one adapter.
pub(super) use crate::peft::DEFAULT_ADAPTER as ADAPTER;

/// Reads the PEFT adapter in `dir` and loads it into `model`'s burn `Linear` and `Embedding`
/// layers; returns the adapted layers in walk order. Parameters of modules saved whole
/// (`modules_to_save`) replace the layers' own in both modes.
///
/// # Errors
///
/// Any [`PeftError`] of [`Adapter::read`] and [`Adapter::plan`]; on error the model is
/// unchanged.
pub fn load_peft_adapter<M: ModuleTree + ?Sized>(
    model: &mut M,
    dir: impl AsRef<Path>,
    mode: LoadMode,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    load_adapter(model, &Adapter::read(dir)?, mode)
}

/// Loads an adapter already read into memory; see [`load_peft_adapter`].
///
/// # Errors
///
/// As [`load_peft_adapter`].
pub fn load_adapter<M: ModuleTree + ?Sized>(
    model: &mut M,
    file: &Adapter,
    mode: LoadMode,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    let layers = survey(model);
    // A per-expert (transformers 4) adapter for a model with fused experts is fused first.
    let fused = file.fused_for(&layers)?;
    let file = fused.as_ref().unwrap_or(file);
    let plan = file.plan(&*model, &layers, mode, ADAPTER)?;
    let mut factors: HashMap<&str, (&PlannedFactors, Vec<f32>, Vec<f32>)> = HashMap::new();
    for planned in &plan.factors {
        let a = planned.a.to_f32_vec(&planned.path)?;
        let b = planned.b.to_f32_vec(&planned.path)?;
        factors.insert(planned.path.as_str(), (planned, a, b));
    }
    let mut parameters: HashMap<&str, Vec<Whole<'_>>> = HashMap::new();
    for parameter in &plan.parameters {
        let data = parameter.tensor.to_f32_vec(&parameter.path)?;
        parameters
            .entry(parameter.path.as_str())
            .or_default()
            .push((
                parameter.param.as_str(),
                parameter.tensor.shape.clone(),
                data,
            ));
    }
    let mut buffer = String::new();
    walk_mut(model, |node| {
        let Some(path) = layer_path(node, &mut buffer) else {
            return;
        };
        // A whole parameter (a module saved whole, or PEFT's copy of an adapted embedding's
        // base) replaces the base first; the factors then apply on top of it.
        if let Some(params) = parameters.remove(path) {
            replace(node, params);
        }
        if let Some((planned, a, b)) = factors.remove(path) {
            if let Some(weight) = weight_mut(node) {
                apply(weight, planned, a, b, mode);
            } else if let Some(bank) = node.downcast_mut::<ExpertBank>() {
                apply_bank(bank, planned, a, b, mode);
            }
        }
    });
    Ok(plan.adapted())
}

/// Every leaf layer's [`LayerInfo`], by path.
pub(super) fn survey<M: ModuleTree + ?Sized>(model: &mut M) -> HashMap<String, LayerInfo> {
    let mut buffer = String::new();
    // A layer behind an `Arc` can be read but not changed: the mutable walk tells which.
    let mut writable: HashSet<String> = HashSet::new();
    walk_mut(model, |node| {
        if let Some(path) = layer_path(node, &mut buffer)
            && (weight_mut(node).is_some() || node.downcast_mut::<ExpertBank>().is_some())
        {
            writable.insert(path.to_owned());
        }
    });
    let mut layers = HashMap::new();
    walk(&*model, |node| {
        if !node.is_layer() {
            return;
        }
        let path = node.path().to_owned_string(false);
        let (shape, adapted) = match weight_ref(node) {
            Some((weight, naming, bias)) => {
                let [rows, cols] = weight.base().dims();
                let shape = match naming {
                    FactorNaming::Linear => LayerShape::Linear {
                        in_features: rows,
                        out_features: cols,
                        bias,
                    },
                    FactorNaming::Embedding => LayerShape::Embedding {
                        num_embeddings: rows,
                        embedding_dim: cols,
                    },
                };
                (shape, weight.adapter().is_some())
            }
            None => match node.downcast_ref::<ExpertBank>() {
                Some(bank) => (
                    LayerShape::Bank {
                        experts: bank.num_experts(),
                        in_features: bank.in_features(),
                        out_features: bank.out_features(),
                    },
                    bank.lora.is_some(),
                ),
                None => (LayerShape::Other, false),
            },
        };
        let attachment = if writable.contains(&path) {
            Attachment::InPlace(adapted)
        } else {
            Attachment::ReadOnly
        };
        layers.insert(
            path,
            LayerInfo {
                type_name: node.type_name(),
                shape,
                attachment,
            },
        );
    });
    layers
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

/// The 2-D weight PEFT adapts at a node (a burn `Linear`'s or `Embedding`'s), how PEFT names its
/// factors, and whether the layer has a bias.
pub(super) fn weight_ref<'n>(
    node: &Node<'n, '_>,
) -> Option<(&'n Param<Tensor<2>>, FactorNaming, bool)> {
    if let Some(linear) = node.downcast_ref::<Linear>() {
        return Some((&linear.weight, FactorNaming::Linear, linear.bias.is_some()));
    }
    node.downcast_ref::<Embedding>()
        .map(|embedding| (&embedding.weight, FactorNaming::Embedding, false))
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

/// A tensor of the stored `values` in PEFT's `[rows, cols]`, transposed to burn's layout and
/// cast to `like`'s float dtype, on its device.
fn burn_tensor(values: Vec<f32>, shape: [usize; 2], like: &Param<Tensor<2>>) -> Tensor<2> {
    let device = like.lazy_device();
    let dtype = like.base().dtype();
    let tensor = Tensor::<2>::from_data(TensorData::new(values, shape), &device).transpose();
    if dtype.is_float() && dtype != DType::F32 {
        tensor.cast(FloatDType::from(dtype))
    } else {
        tensor
    }
}

fn apply(
    weight_slot: &mut Param<Tensor<2>>,
    planned: &PlannedFactors,
    a: Vec<f32>,
    b: Vec<f32>,
    mode: LoadMode,
) {
    let dims = |raw: &RawTensor| [raw.shape[0], raw.shape[1]];
    // burn's a = Aᵀ and b = Bᵀ.
    let a = burn_tensor(a, dims(planned.a), weight_slot);
    let b = burn_tensor(b, dims(planned.b), weight_slot);
    let weight = weight_slot.clone();
    *weight_slot = match mode {
        LoadMode::Attach => weight.apply_reparameterization(Attach(Some(LoraAdapter {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            scale: planned.scale,
        }))),
        LoadMode::Merge => {
            let delta = a.matmul(b).mul_scalar(planned.scale);
            weight.map(|base| base + delta)
        }
    };
}

/// Attaches planned factors to an expert bank (PEFT's layout is the bank's: no transpose), or
/// folds them into its weight.
fn apply_bank(
    bank: &mut ExpertBank,
    planned: &PlannedFactors,
    a: Vec<f32>,
    b: Vec<f32>,
    mode: LoadMode,
) {
    let device = bank.device();
    let dims = |raw: &RawTensor| [raw.shape[0], raw.shape[1]];
    let lora = ExpertLora {
        a: Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(a, dims(planned.a)),
            &device,
        )),
        b: Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(b, dims(planned.b)),
            &device,
        )),
        experts: bank.num_experts(),
        scale: planned.scale,
    };
    match mode {
        LoadMode::Attach => bank.lora = Some(lora),
        LoadMode::Merge => {
            let delta = lora.delta();
            bank.weight = bank.weight.clone().map(|weight| weight + delta);
        }
    }
}

/// Replaces a layer's parameters with stored ones (PEFT's layout: a linear's weight
/// `[out, in]`, transposed here).
fn replace(node: &mut NodeMut<'_, '_>, params: Vec<Whole<'_>>) {
    for (param, shape, data) in params {
        if let Some(linear) = node.downcast_mut::<Linear>() {
            match (param, shape.as_slice()) {
                ("weight", [rows, cols]) => {
                    let new = burn_tensor(data, [*rows, *cols], &linear.weight);
                    linear.weight = linear.weight.clone().map(|_| new);
                }
                ("bias", _) => {
                    if let Some(bias) = linear.bias.as_mut() {
                        let device = bias.lazy_device();
                        let new = Tensor::<1>::from_data(TensorData::new(data, shape), &device);
                        *bias = bias.clone().map(|_| new);
                    }
                }
                _ => {}
            }
        } else if let Some(embedding) = node.downcast_mut::<Embedding>()
            && let ("weight", [rows, cols]) = (param, shape.as_slice())
        {
            // The table is [entries, dim] in both layouts: transpose twice is none.
            let new = burn_tensor(data, [*rows, *cols], &embedding.weight).transpose();
            embedding.weight = embedding.weight.clone().map(|_| new);
        }
    }
}
