//! PEFT adapters into candle models. Every rule (names, selection, pairing, shapes,
//! refusals, the saved config) is [`crate::peft`]'s; this file converts tensors and installs
//! them.
//!
//! Loading surveys the model's leaf layers, asks [`Adapter::plan`] to check the whole file
//! against them, converts the planned tensors to the layers' dtype and device, computes every
//! new adapter or merged weight, and only then writes: on any error the model is exactly as it
//! was.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, Linear};
use safetensors::tensor::Dtype;

use crate::candle::adapter::LoraAdapter;
use crate::candle::bank::{ExpertAdapter, merged_weight};
use crate::candle::lora::{DEFAULT_ADAPTER, merged_embedding, merged_linear};
use crate::candle::sites::{Change, Layer, Site, install, survey};
use crate::peft::{
    AdaptedLayer, Adapter, Attachment, LayerInfo, LayerShape, LoadMode, LoraConfig, PeftError,
    PlannedFactors, RawTensor,
};
use crate::tree::ModuleTree;

/// Loads the PEFT adapter in `dir` into `model` under the name `"default"`; returns the adapted
/// layers in walk order.
///
/// # Errors
///
/// See [`load_peft_adapter_as`]. On any error `model` is exactly as it was.
pub fn load_peft_adapter<M: ModuleTree + ?Sized>(
    model: &mut M,
    dir: impl AsRef<Path>,
    mode: LoadMode,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    load_peft_adapter_as(model, dir, mode, DEFAULT_ADAPTER)
}

/// Loads the PEFT adapter in `dir` into `model` under the name `adapter` (used by
/// [`LoadMode::Attach`]); returns the adapted layers in walk order.
///
/// With [`LoadMode::Attach`] every adapted layer must be a [`LoraLinear`](crate::candle::LoraLinear) or [`LoraEmbedding`](crate::candle::LoraEmbedding)
/// slot; with [`LoadMode::Merge`] plain `candle_nn::Linear` and `Embedding` layers take the
/// merged weight too. Parameters of modules saved whole (`modules_to_save`) replace the layers'
/// own in both modes.
///
/// # Errors
///
/// Any [`PeftError`] of [`Adapter::read`] and [`Adapter::plan`]; [`PeftError::Tensor`] when a
/// conversion fails. On any error `model` is exactly as it was.
pub fn load_peft_adapter_as<M: ModuleTree + ?Sized>(
    model: &mut M,
    dir: impl AsRef<Path>,
    mode: LoadMode,
    adapter: &str,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    load_adapter(model, &Adapter::read(dir)?, mode, adapter)
}

/// Loads an adapter already read into memory; see [`load_peft_adapter_as`].
///
/// # Errors
///
/// As [`load_peft_adapter_as`].
pub fn load_adapter<M: ModuleTree + ?Sized>(
    model: &mut M,
    file: &Adapter,
    mode: LoadMode,
    adapter: &str,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    let sites = survey(model);
    let layers = infos(&sites);
    // A per-expert (transformers 4) adapter for a model with fused experts is fused first.
    let fused = file.fused_for(&layers)?;
    let file = fused.as_ref().unwrap_or(file);
    let plan = file.plan(&*model, &layers, mode, adapter)?;
    // Whole parameters (modules saved whole, PEFT's copies of adapted embeddings' bases) give
    // layers new bases first; factors then attach to, or merge into, those bases.
    let mut bases: HashMap<&str, Layer> = HashMap::new();
    let mut saved: HashMap<&str, HashMap<&str, &RawTensor>> = HashMap::new();
    for parameter in &plan.parameters {
        saved
            .entry(parameter.path.as_str())
            .or_default()
            .insert(parameter.param.as_str(), parameter.tensor);
    }
    for (path, params) in saved {
        let Some(site) = sites.get(path) else {
            continue;
        };
        if let Some(adapter) = &site.merged {
            return Err(PeftError::Merged {
                path: path.to_owned(),
                adapter: adapter.clone(),
            });
        }
        let error = tensor_error(path);
        let base = match &site.layer {
            Layer::LoraLinear(base, _) | Layer::Linear(base) => {
                let like = base.weight();
                let weight = match params.get("weight") {
                    Some(raw) => to_tensor(raw, like).map_err(&error)?,
                    None => like.clone(),
                };
                let bias = match (params.get("bias"), base.bias()) {
                    (Some(raw), Some(old)) => Some(to_tensor(raw, old).map_err(&error)?),
                    (_, old) => old.cloned(),
                };
                Layer::Linear(Linear::new(weight, bias))
            }
            Layer::LoraEmbedding(base, _) | Layer::Embedding(base) => {
                let like = base.embeddings();
                let table = match params.get("weight") {
                    Some(raw) => to_tensor(raw, like).map_err(&error)?,
                    None => like.clone(),
                };
                Layer::Embedding(Embedding::new(table, base.hidden_size()))
            }
            Layer::Bank(..) | Layer::Other => continue,
        };
        bases.insert(path, base);
    }
    let mut changes: HashMap<String, Vec<Change>> = HashMap::new();
    for planned in &plan.factors {
        let Some(site) = sites.get(&planned.path) else {
            continue;
        };
        if let Layer::Bank(weight, transposed, _) = &site.layer {
            let step = bank_change(planned, weight, *transposed, file.config(), mode, adapter)?;
            changes.insert(planned.path.clone(), vec![step]);
            continue;
        }
        let lora = adapter_of(planned, site, file.config())?;
        let error = tensor_error(&planned.path);
        let base = bases.remove(planned.path.as_str());
        let layer = base.as_ref().unwrap_or(&site.layer);
        let mut steps = Vec::with_capacity(2);
        match (mode, layer) {
            (LoadMode::Attach, _) => {
                steps.extend(base.clone().and_then(base_change));
                steps.push(Change::Attach(adapter.to_owned(), lora));
            }
            (LoadMode::Merge, Layer::LoraLinear(base, _) | Layer::Linear(base)) => {
                steps.push(Change::SetLinear(
                    merged_linear(base, &lora, 1.0).map_err(error)?,
                ));
            }
            (LoadMode::Merge, Layer::LoraEmbedding(base, _) | Layer::Embedding(base)) => {
                steps.push(Change::SetEmbedding(
                    merged_embedding(base, &lora, 1.0).map_err(error)?,
                ));
            }
            (LoadMode::Merge, Layer::Bank(..) | Layer::Other) => continue,
        }
        changes.insert(planned.path.clone(), steps);
    }
    for (path, base) in bases {
        changes.insert(path.to_owned(), base_change(base).into_iter().collect());
    }
    install(model, changes);
    Ok(plan.adapted())
}

/// The change that installs a new base layer.
fn base_change(layer: Layer) -> Option<Change> {
    match layer {
        Layer::LoraLinear(linear, _) | Layer::Linear(linear) => Some(Change::SetLinear(linear)),
        Layer::LoraEmbedding(table, _) | Layer::Embedding(table) => {
            Some(Change::SetEmbedding(table))
        }
        Layer::Bank(..) | Layer::Other => None,
    }
}

/// The change that attaches planned factors to an expert bank, or folds them into its weight.
fn bank_change(
    planned: &PlannedFactors<'_>,
    weight: &Tensor,
    transposed: bool,
    config: &LoraConfig,
    mode: LoadMode,
    adapter: &str,
) -> Result<Change, PeftError> {
    let error = tensor_error(&planned.path);
    let experts = weight.dim(0).map_err(&error)?;
    let a = to_tensor(planned.a, weight).map_err(&error)?;
    let b = to_tensor(planned.b, weight).map_err(&error)?;
    let bank_adapter = ExpertAdapter::new(a, b, experts, planned.alpha, config.use_rslora)
        .map_err(|source| PeftError::Tensor {
            path: planned.path.clone(),
            message: source.to_string(),
        })?;
    Ok(match mode {
        LoadMode::Attach => Change::AttachBank(adapter.to_owned(), bank_adapter),
        LoadMode::Merge => Change::SetBankWeight(
            merged_weight(weight, &bank_adapter, 1.0, transposed).map_err(&error)?,
        ),
    })
}

/// What the PEFT core needs to know of every leaf layer of `model`, by path.
pub(crate) fn layer_infos<M: ModuleTree + ?Sized>(model: &mut M) -> HashMap<String, LayerInfo> {
    infos(&survey(model))
}

fn infos(sites: &HashMap<String, Site>) -> HashMap<String, LayerInfo> {
    sites
        .iter()
        .map(|(path, site)| (path.clone(), layer_info(site)))
        .collect()
}

/// What the PEFT core needs to know of a surveyed layer.
fn layer_info(site: &Site) -> LayerInfo {
    let (shape, attachment) = match &site.layer {
        Layer::LoraLinear(linear, names) => (linear_shape(linear), Attachment::Slot(names.clone())),
        Layer::Linear(linear) => (
            linear_shape(linear),
            Attachment::Plain { slot: "LoraLinear" },
        ),
        Layer::LoraEmbedding(table, names) => {
            (embedding_shape(table), Attachment::Slot(names.clone()))
        }
        Layer::Embedding(table) => (
            embedding_shape(table),
            Attachment::Plain {
                slot: "LoraEmbedding",
            },
        ),
        Layer::Bank(weight, transposed, names) => {
            let dims = weight.dims();
            (
                LayerShape::bank(dims[0], dims[1], dims[2], *transposed),
                Attachment::Slot(names.clone()),
            )
        }
        Layer::Other => (LayerShape::Other, Attachment::ReadOnly),
    };
    LayerInfo {
        type_name: site.type_name,
        shape,
        attachment: if site.read_only {
            Attachment::ReadOnly
        } else {
            attachment
        },
    }
}

fn linear_shape(linear: &Linear) -> LayerShape {
    let (out_features, in_features) = linear.weight().dims2().unwrap_or((0, 0));
    LayerShape::Linear {
        in_features,
        out_features,
        bias: linear.bias().is_some(),
    }
}

fn embedding_shape(table: &Embedding) -> LayerShape {
    let (num_embeddings, embedding_dim) = table.embeddings().dims2().unwrap_or((0, 0));
    LayerShape::Embedding {
        num_embeddings,
        embedding_dim,
    }
}

pub(super) fn tensor_error(path: &str) -> impl Fn(candle_core::Error) -> PeftError + '_ {
    move |source| PeftError::Tensor {
        path: path.to_owned(),
        message: source.to_string(),
    }
}

/// The planned factors as a candle adapter, in the layer's dtype and on its device.
fn adapter_of(
    planned: &PlannedFactors,
    site: &Site,
    config: &LoraConfig,
) -> Result<LoraAdapter, PeftError> {
    let error = tensor_error(&planned.path);
    let like = site.weight().ok_or_else(|| PeftError::Tensor {
        path: planned.path.clone(),
        message: "the layer has no weight".to_owned(),
    })?;
    let a = to_tensor(planned.a, like).map_err(&error)?;
    let b = to_tensor(planned.b, like).map_err(&error)?;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a dropout probability fits an f32"
    )]
    let dropout = config.lora_dropout as f32;
    let adapter = LoraAdapter::new(a, b, planned.alpha, config.use_rslora).map_err(|source| {
        PeftError::Tensor {
            path: planned.path.clone(),
            message: source.to_string(),
        }
    })?;
    Ok(adapter.with_dropout(dropout))
}

/// A stored tensor as a candle tensor of `like`'s dtype, on `like`'s device.
fn to_tensor(raw: &RawTensor, like: &Tensor) -> candle_core::Result<Tensor> {
    let dtype = match raw.dtype {
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        _ => DType::F32,
    };
    Tensor::from_raw_buffer(raw.data(), dtype, &raw.shape, &Device::Cpu)?
        .to_dtype(like.dtype())?
        .to_device(like.device())
}
