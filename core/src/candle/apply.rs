//! Attaching fresh, trainable adapters to the layers a target spec selects.
//!
//! Each selected layer must be a [`LoraLinear`] or [`LoraEmbedding`] slot. Its new adapter's
//! tensors are variables created through the caller's `VarBuilder` under PEFT's names
//! (`base_model.model.<path>.lora_A.weight`, …), so that the `VarMap` behind it trains exactly
//! the adapters and `VarMap::save` writes PEFT's keys. Initialisation follows PEFT: a linear's
//! `A` is Kaiming-uniform (`a = sqrt(5)`, bound `1 / sqrt(in)`) and `B` zero, so the model's
//! output does not change until training; an embedding's `A` is zero and `B` standard normal.

use std::collections::{HashMap, HashSet};

use candle_nn::{Init, VarBuilder};

use crate::candle::error::LoraError;
use crate::candle::lora::{DEFAULT_ADAPTER, LoraAdapter, check_settings};
use crate::candle::sites::{Change, Layer, install, survey};
use crate::peft::LoraConfig;
use crate::target::TargetSpec;
use crate::tree::ModuleTree;

/// One layer to adapt, with its rank and alpha.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTarget {
    /// The layer's path (`model.layers.0.self_attn.q_proj`).
    pub path: String,
    /// The rank `r`.
    pub rank: usize,
    /// The alpha.
    pub alpha: f64,
}

/// Attaches a fresh adapter named `"default"` to every layer `spec` resolves to in `model`, with
/// the rank and alpha the spec gives each layer, and rsLoRA and dropout from `config`; returns
/// the adapted paths in walk order.
///
/// The variables are created through `vb` under `base_model.model.<path>.lora_A.weight` and
/// `.lora_B.weight` (`lora_embedding_A` / `lora_embedding_B` for embeddings), in `vb`'s dtype and
/// device, which should be the model's. To save the result with
/// [`save_peft_adapter`](crate::candle::save_peft_adapter), `config`'s `r`, `lora_alpha` and
/// patterns must give the same ranks and alphas as the spec: build the spec with
/// [`LoraConfig::target_spec`] to have one source for both.
///
/// # Errors
///
/// [`LoraError::Target`] when the spec does not resolve; see [`apply_lora_to`] for the rest. On
/// any error `model` is exactly as it was.
pub fn apply_lora<M: ModuleTree + ?Sized>(
    model: &mut M,
    spec: &TargetSpec,
    config: &LoraConfig,
    vb: &VarBuilder<'_>,
) -> Result<Vec<String>, LoraError> {
    apply_lora_as(model, spec, config, vb, DEFAULT_ADAPTER)
}

/// [`apply_lora`] with an adapter name of the caller's.
///
/// # Errors
///
/// As [`apply_lora`].
pub fn apply_lora_as<M: ModuleTree + ?Sized>(
    model: &mut M,
    spec: &TargetSpec,
    config: &LoraConfig,
    vb: &VarBuilder<'_>,
    adapter: &str,
) -> Result<Vec<String>, LoraError> {
    let resolution = spec.resolve(&*model)?;
    let targets: Vec<LoraTarget> = resolution
        .layers
        .iter()
        .map(|layer| LoraTarget {
            path: layer.path.clone(),
            rank: layer.rank as usize,
            alpha: layer.alpha,
        })
        .collect();
    apply_lora_to(model, &targets, config, vb, adapter)
}

/// Attaches a fresh adapter named `adapter` to each listed layer; the lower-level form of
/// [`apply_lora`] for paths resolved by other means. Returns the adapted paths in walk order.
///
/// # Errors
///
/// [`LoraError::NoLayer`] for a path that is no leaf layer; [`LoraError::NotASlot`] for a plain
/// `candle_nn::Linear` or `Embedding` (the message names the slot type to declare);
/// [`LoraError::NotAdaptable`] for any other layer; [`LoraError::DuplicateAdapter`] when a slot
/// already holds `adapter`; [`LoraError::Settings`] for a zero rank or a non-positive alpha;
/// [`LoraError::VariableExists`] when `vb`'s storage already has one of the names. On any error
/// `model` is exactly as it was (variables created before a failing one stay in the `VarMap`).
pub fn apply_lora_to<M: ModuleTree + ?Sized>(
    model: &mut M,
    targets: &[LoraTarget],
    config: &LoraConfig,
    vb: &VarBuilder<'_>,
    adapter: &str,
) -> Result<Vec<String>, LoraError> {
    let sites = survey(model);
    let mut seen = HashSet::new();
    let mut planned = Vec::with_capacity(targets.len());
    for target in targets {
        if !seen.insert(target.path.as_str()) {
            continue;
        }
        let path = target.path.as_str();
        let site = sites.get(path).ok_or_else(|| LoraError::NoLayer {
            path: path.to_owned(),
        })?;
        let (rows, cols) = match (&site.layer, site.shape()) {
            (Layer::LoraLinear(..) | Layer::LoraEmbedding(..), Some(shape)) => shape,
            (Layer::Linear(_) | Layer::Embedding(_), _) => {
                return Err(LoraError::NotASlot {
                    path: path.to_owned(),
                    type_name: site.type_name,
                    slot: site.slot_name(),
                });
            }
            _ => return Err(site.not_adaptable(path)),
        };
        if site
            .slot_adapters()
            .is_some_and(|names| names.iter().any(|name| name == adapter))
        {
            return Err(LoraError::DuplicateAdapter {
                path: path.to_owned(),
                adapter: adapter.to_owned(),
            });
        }
        check_settings(target.rank, target.alpha).map_err(|error| error.at(path))?;
        let names = variable_names(path, site.is_embedding());
        for name in &names {
            if vb.contains_tensor(name) {
                return Err(LoraError::VariableExists {
                    name: full_name(vb, name),
                });
            }
        }
        planned.push((target, site.is_embedding(), rows, cols, names));
    }

    let mut changes = HashMap::with_capacity(planned.len());
    for (target, embedding, rows, cols, [a_name, b_name]) in planned {
        let path = target.path.as_str();
        let r = target.rank;
        let tensor_error = |source| LoraError::Tensor {
            path: path.to_owned(),
            source,
        };
        let (a, b) = if embedding {
            // table [num, dim]: A [r, num] zero, B [dim, r] standard normal
            let a = vb.get_with_hints((r, rows), &a_name, Init::Const(0.0));
            let b = vb.get_with_hints(
                (cols, r),
                &b_name,
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            );
            (a.map_err(tensor_error)?, b.map_err(tensor_error)?)
        } else {
            // weight [out, in]: A [r, in] Kaiming-uniform with a = sqrt(5), B [out, r] zero
            #[expect(
                clippy::cast_precision_loss,
                reason = "layer widths are far below 2^52"
            )]
            let bound = 1.0 / (cols as f64).sqrt();
            let a = vb.get_with_hints(
                (r, cols),
                &a_name,
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            );
            let b = vb.get_with_hints((rows, r), &b_name, Init::Const(0.0));
            (a.map_err(tensor_error)?, b.map_err(tensor_error)?)
        };
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a dropout probability fits an f32"
        )]
        let dropout = if embedding {
            0.0
        } else {
            config.lora_dropout as f32
        };
        let lora = LoraAdapter::new(a, b, target.alpha, config.use_rslora)
            .map_err(|error| error.at(path))?
            .with_dropout(dropout);
        changes.insert(
            target.path.clone(),
            vec![Change::Attach(adapter.to_owned(), lora)],
        );
    }
    let mut adapted: Vec<String> = changes.keys().cloned().collect();
    adapted.sort_by_key(|path| sites.get(path).map_or(usize::MAX, |site| site.order));
    install(model, changes);
    Ok(adapted)
}

/// PEFT's names of the two variables of the adapter at `path`, relative to the `VarBuilder`.
fn variable_names(path: &str, embedding: bool) -> [String; 2] {
    if embedding {
        [
            format!("base_model.model.{path}.lora_embedding_A"),
            format!("base_model.model.{path}.lora_embedding_B"),
        ]
    } else {
        [
            format!("base_model.model.{path}.lora_A.weight"),
            format!("base_model.model.{path}.lora_B.weight"),
        ]
    }
}

fn full_name(vb: &VarBuilder<'_>, name: &str) -> String {
    let prefix = vb.prefix();
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}
