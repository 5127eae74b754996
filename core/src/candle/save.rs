//! Writing a candle model's adapters as a PEFT adapter directory: the slots' factors (and the
//! layers saved whole) as stored tensors; the files and the config are [`write_adapter`]'s.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, Linear};
use safetensors::tensor::View;

use crate::candle::bank::ExpertBank;
use crate::candle::lora::{DEFAULT_ADAPTER, LoraEmbedding, LoraLinear};
use crate::candle::peft::tensor_error;
use crate::path::push_path;
use crate::peft::names::{FactorNaming, is_embedding_layer_name};
use crate::peft::per_expert::save_per_expert;
use crate::peft::{
    AdaptedLayer, LoraConfig, PeftError, PerExpertNames, RawTensor, SavedFactors, SavedParameter,
    saved_module_layers, write_adapter,
};
use crate::tree::ModuleTree;
use crate::walk::walk;

/// A candle tensor as stored bytes, in its own dtype (float dtypes only; others as `F32`).
fn to_raw(tensor: &Tensor) -> candle_core::Result<RawTensor> {
    let tensor = match tensor.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => tensor.to_device(&Device::Cpu)?,
        _ => tensor.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
    };
    let tensor = tensor.contiguous()?;
    Ok(RawTensor::new(
        View::dtype(&tensor),
        tensor.dims().to_vec(),
        View::data(&tensor).into_owned(),
    ))
}

/// Saves the active adapter of every slot of `model` to `dir` in PEFT's layout; returns the
/// saved layers in walk order.
///
/// # Errors
///
/// See [`save_peft_adapter_named`].
pub fn save_peft_adapter<M: ModuleTree + ?Sized>(
    model: &M,
    dir: impl AsRef<Path>,
    config: &LoraConfig,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    save(model, dir.as_ref(), config, None)
}

/// Saves the adapter named `adapter` of every slot that holds one to `dir` in PEFT's layout
/// (see [`write_adapter`] for the files and the config written), with the parameters of the
/// layers inside `config`'s `modules_to_save`; returns the saved layers in walk order. Tensors
/// keep their dtype.
///
/// # Errors
///
/// As [`write_adapter`]; [`PeftError::Tensor`] when a tensor cannot be read. Nothing is written
/// unless everything checks.
pub fn save_peft_adapter_named<M: ModuleTree + ?Sized>(
    model: &M,
    dir: impl AsRef<Path>,
    config: &LoraConfig,
    adapter: &str,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    save(model, dir.as_ref(), config, Some(adapter))
}

/// Saves the active adapters like [`save_peft_adapter`], with every fused expert bank's factors
/// split into per-expert factors under transformers 4's names (`names`, e.g.
/// [`PerExpertNames::MIXTRAL`]): the file PEFT loads on a transformers 4 model with per-expert
/// linears (see [`Adapter::to_per_expert`](crate::peft::Adapter::to_per_expert)).
///
/// # Errors
///
/// As [`save_peft_adapter`] and [`Adapter::to_per_expert`](crate::peft::Adapter::to_per_expert).
pub fn save_peft_adapter_per_expert<M: ModuleTree + ?Sized>(
    model: &mut M,
    dir: impl AsRef<Path>,
    config: &LoraConfig,
    names: PerExpertNames,
) -> Result<(), PeftError> {
    let layers = crate::candle::peft::layer_infos(model);
    save_per_expert(&*model, &layers, dir.as_ref(), names, |scratch| {
        save(&*model, scratch, config, None)
    })
}

fn save<M: ModuleTree + ?Sized>(
    model: &M,
    dir: &Path,
    config: &LoraConfig,
    adapter: Option<&str>,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    let saved_layers = saved_module_layers(model, config, dir)?;
    let mut factors = Vec::new();
    let mut parameters = Vec::new();
    let mut failure = None;
    let mut joined = String::new();
    walk(model, |node| {
        if failure.is_some() || !node.is_layer() {
            return;
        }
        joined.clear();
        push_path(&mut joined, node.path().segments(), false);
        if let Some(bank) = node.downcast_ref::<ExpertBank>() {
            let found = match adapter {
                Some(name) => bank.adapter(name),
                None => bank.active_adapter().map(|(_, found)| found),
            };
            if let Some(found) = found {
                match (to_raw(found.a()), to_raw(found.b())) {
                    (Ok(a), Ok(b)) => factors.push(SavedFactors {
                        path: joined.clone(),
                        naming: FactorNaming::Linear,
                        rank: u32::try_from(found.rank()).unwrap_or(u32::MAX),
                        alpha: found.alpha(),
                        rslora: found.is_rslora(),
                        a,
                        b,
                        bank: true,
                        base: None,
                    }),
                    (Err(source), _) | (_, Err(source)) => {
                        failure = Some(tensor_error(&joined)(source));
                    }
                }
            }
            return;
        }
        let (found, naming, base) = if let Some(slot) = node.downcast_ref::<LoraLinear>() {
            let found = match adapter {
                Some(name) => slot.adapter(name),
                None => slot.active_adapter().map(|(_, found)| found),
            };
            let base = vec![("weight", slot.base().weight())];
            let base = with_bias(base, slot.base().bias());
            (found, FactorNaming::Linear, base)
        } else if let Some(slot) = node.downcast_ref::<LoraEmbedding>() {
            let found = match adapter {
                Some(name) => slot.adapter(name),
                None => slot.active_adapter().map(|(_, found)| found),
            };
            (
                found,
                FactorNaming::Embedding,
                vec![("weight", slot.base().embeddings())],
            )
        } else if let Some(linear) = node.downcast_ref::<Linear>() {
            (
                None,
                FactorNaming::Linear,
                with_bias(vec![("weight", linear.weight())], linear.bias()),
            )
        } else if let Some(table) = node.downcast_ref::<Embedding>() {
            (
                None,
                FactorNaming::Embedding,
                vec![("weight", table.embeddings())],
            )
        } else {
            (None, FactorNaming::Linear, Vec::new())
        };
        if saved_layers.contains(joined.as_str()) {
            for (param, tensor) in base {
                match to_raw(tensor) {
                    Ok(tensor) => parameters.push(SavedParameter {
                        path: joined.clone(),
                        param: param.to_owned(),
                        tensor,
                    }),
                    Err(source) => failure = Some(tensor_error(&joined)(source)),
                }
            }
            return;
        }
        let Some(found) = found else {
            return;
        };
        let base = base
            .first()
            .filter(|_| is_embedding_layer_name(&joined))
            .map(|(_, weight)| to_raw(weight))
            .transpose();
        match (to_raw(found.a()), to_raw(found.b()), base) {
            (Ok(a), Ok(b), Ok(base)) => factors.push(SavedFactors {
                path: joined.clone(),
                naming,
                rank: u32::try_from(found.rank()).unwrap_or(u32::MAX),
                alpha: found.alpha(),
                rslora: found.is_rslora(),
                a,
                b,
                bank: false,
                base,
            }),
            (Err(source), ..) | (_, Err(source), _) | (.., Err(source)) => {
                failure = Some(tensor_error(&joined)(source));
            }
        }
    });
    if let Some(error) = failure {
        return Err(error);
    }
    write_adapter(
        model,
        dir,
        config,
        &factors,
        &parameters,
        adapter.unwrap_or(DEFAULT_ADAPTER),
    )
}

fn with_bias<'t>(
    mut params: Vec<(&'static str, &'t Tensor)>,
    bias: Option<&'t Tensor>,
) -> Vec<(&'static str, &'t Tensor)> {
    if let Some(bias) = bias {
        params.push(("bias", bias));
    }
    params
}
