//! Attaching fresh, trainable adapters to the layers a config selects.
//!
//! Each selected layer must be a [`LoraLinear`] or [`LoraEmbedding`] slot, or an
//! [`ExpertBank`](crate::candle::ExpertBank). Its new adapter's
//! tensors are variables of the caller's `VarMap`, named as PEFT names them
//! (`base_model.model.<path>.lora_A.weight`, …) and made in the layer's dtype and on its device,
//! so that the `VarMap` trains exactly the adapters and `VarMap::save` writes PEFT's keys.
//! Initialisation follows PEFT (`LoraLayer.reset_lora_parameters` in
//! `peft/tuners/lora/layer.py`): a linear's `A` is Kaiming-uniform (`a = sqrt(5)`, bound
//! `1 / sqrt(in)`) and `B` zero, so the model's output does not change until training; an
//! embedding's `A` is zero and `B` standard normal.
//!
//! Everything is checked before any variable is made; should making one fail all the same, the
//! variables already made are removed again, so a failed call leaves the `VarMap` and the model as
//! they were.

use std::collections::{HashMap, HashSet};

use candle_nn::{Init, VarBuilder, VarMap};

use crate::candle::adapter::LoraAdapter;
use crate::candle::bank::ExpertAdapter;
use crate::candle::lora::DEFAULT_ADAPTER;
use crate::candle::sites::{Change, Layer, install, survey};
use crate::peft::names::{Factor, FactorName, FactorNaming};
use crate::peft::{ADAPTER_CONFIG_FILE, AdaptedLayer, LoraConfig, PeftError, scale};
use crate::tree::ModuleTree;

/// One layer to adapt, with its rank and alpha.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTarget {
    /// The layer's path (`model.layers.0.self_attn.q_proj`).
    pub path: String,
    /// The rank `r`.
    pub rank: u32,
    /// The alpha.
    pub alpha: f64,
}

/// Attaches a fresh adapter named `"default"` to every layer `config` selects in `model`
/// (`target_modules`, `exclude_modules`, `layers_to_transform`, …, with the rank and alpha its
/// patterns give each layer, and its rsLoRA and dropout); returns the adapted layers in walk
/// order. The same config then saves the adapter with
/// [`save_peft_adapter`](crate::candle::save_peft_adapter).
///
/// # Errors
///
/// [`PeftError::Config`] / [`PeftError::Refused`] for a config that does not validate;
/// [`PeftError::Selection`] when its selection does not resolve; see [`apply_lora_to`] for the
/// rest. On any error `model` and `varmap` are exactly as they were.
pub fn apply_lora<M: ModuleTree + ?Sized>(
    model: &mut M,
    config: &LoraConfig,
    varmap: &VarMap,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    apply_lora_as(model, config, varmap, DEFAULT_ADAPTER)
}

/// [`apply_lora`] with an adapter name of the caller's.
///
/// # Errors
///
/// As [`apply_lora`].
pub fn apply_lora_as<M: ModuleTree + ?Sized>(
    model: &mut M,
    config: &LoraConfig,
    varmap: &VarMap,
    adapter: &str,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    let file = std::path::Path::new(ADAPTER_CONFIG_FILE);
    let spec = config.checked_spec(file)?;
    let resolution = spec
        .resolve(&*model)
        .map_err(|source| PeftError::Selection {
            file: file.to_owned(),
            source,
        })?;
    let targets: Vec<LoraTarget> = resolution
        .layers
        .iter()
        .map(|layer| LoraTarget {
            path: layer.path.clone(),
            rank: layer.rank,
            alpha: layer.alpha,
        })
        .collect();
    apply_lora_to(model, &targets, config, varmap, adapter)
}

/// Attaches a fresh adapter named `adapter` to each listed layer; the lower-level form of
/// [`apply_lora`] for paths resolved by other means (`config` gives rsLoRA and dropout only).
/// Returns the adapted layers in walk order.
///
/// # Errors
///
/// [`PeftError::NotALayer`] for a path that is no leaf layer; [`PeftError::NotASlot`] for a plain
/// `candle_nn::Linear` or `Embedding` (the message names the slot type to declare);
/// [`PeftError::NotAdaptable`] for any other layer; [`PeftError::DuplicateAdapter`] when a slot
/// already holds `adapter`; [`PeftError::Settings`] for a zero rank or an alpha that is not
/// finite; [`PeftError::VariableExists`] when `varmap` already has one of the names;
/// [`PeftError::Tensor`] when making a variable fails. On any error `model` and `varmap` are
/// exactly as they were.
pub fn apply_lora_to<M: ModuleTree + ?Sized>(
    model: &mut M,
    targets: &[LoraTarget],
    config: &LoraConfig,
    varmap: &VarMap,
    adapter: &str,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    let sites = survey(model);
    let mut seen = HashSet::new();
    let mut planned = Vec::with_capacity(targets.len());
    for target in targets {
        if !seen.insert(target.path.as_str()) {
            continue;
        }
        let path = target.path.as_str();
        let site = sites.get(path).ok_or_else(|| PeftError::NotALayer {
            path: path.to_owned(),
        })?;
        if site.read_only {
            return Err(PeftError::ReadOnly {
                path: path.to_owned(),
            });
        }
        let mut bank = None;
        let (weight, names, naming) = match &site.layer {
            Layer::LoraLinear(linear, names) => (linear.weight(), names, FactorNaming::Linear),
            Layer::LoraEmbedding(table, names) => {
                (table.embeddings(), names, FactorNaming::Embedding)
            }
            Layer::Bank(weight, transposed, names) => {
                bank = Some(*transposed);
                (weight, names, FactorNaming::Linear)
            }
            Layer::Linear(_) | Layer::Embedding(_) => {
                return Err(PeftError::NotASlot {
                    path: path.to_owned(),
                    type_name: site.type_name,
                    slot: site.slot_name(),
                });
            }
            Layer::Other => {
                return Err(PeftError::NotAdaptable {
                    key: path.to_owned(),
                    path: path.to_owned(),
                    type_name: site.type_name,
                    what: "is neither a linear nor an embedding",
                });
            }
        };
        if names.iter().any(|name| name == adapter) {
            return Err(PeftError::DuplicateAdapter {
                path: path.to_owned(),
                adapter: adapter.to_owned(),
            });
        }
        if target.rank == 0 || !target.alpha.is_finite() {
            return Err(PeftError::Settings {
                path: path.to_owned(),
                rank: target.rank,
                alpha: target.alpha,
            });
        }
        if bank.is_some() && config.lora_dropout > 0.0 {
            return Err(crate::peft::bank_dropout_error(path, site.type_name));
        }
        let names = [Factor::A, Factor::B].map(|factor| {
            FactorName {
                path,
                factor,
                naming,
            }
            .to_peft()
        });
        if let Ok(data) = varmap.data().lock()
            && let Some(name) = names.iter().find(|name| data.contains_key(*name))
        {
            return Err(PeftError::VariableExists { name: name.clone() });
        }
        // [out, in] for a linear, [num, dim] for a table; a bank's experts' widths and count.
        let (experts, rows, cols) = match (bank, weight.dims()) {
            (Some(false), &[experts, out, input]) => (experts, out, input),
            (Some(true), &[experts, input, out]) => (experts, out, input),
            (None, &[rows, cols]) => (1, rows, cols),
            (_, dims) => {
                return Err(PeftError::Tensor {
                    path: path.to_owned(),
                    message: format!("unexpected weight shape {dims:?}"),
                });
            }
        };
        planned.push(Planned {
            target,
            naming,
            weight: weight.clone(),
            rows,
            cols,
            experts: bank.map(|_| experts),
            names,
        });
    }

    let mut made: Vec<String> = Vec::with_capacity(2 * planned.len());
    let result = make_adapters(&planned, config, varmap, adapter, &mut made);
    let changes = match result {
        Ok(changes) => changes,
        Err(error) => {
            if let Ok(mut data) = varmap.data().lock() {
                for name in &made {
                    data.remove(name);
                }
            }
            return Err(error);
        }
    };
    install(model, changes);
    let mut adapted: Vec<AdaptedLayer> = planned
        .iter()
        .map(|Planned { target, .. }| AdaptedLayer {
            path: target.path.clone(),
            rank: target.rank,
            alpha: target.alpha,
            scale: scale(target.rank, target.alpha, config.use_rslora),
        })
        .collect();
    adapted.sort_by_key(|layer| sites.get(&layer.path).map_or(usize::MAX, |site| site.order));
    Ok(adapted)
}

/// One checked target: its layer's weight, widths (`rows` out or entries, `cols` in or dim),
/// the bank's number of experts if it is one, and its variables' names.
struct Planned<'t> {
    target: &'t LoraTarget,
    naming: FactorNaming,
    weight: candle_core::Tensor,
    rows: usize,
    cols: usize,
    experts: Option<usize>,
    names: [String; 2],
}

/// Makes every planned adapter's variables, recording each name made in `made`.
fn make_adapters(
    planned: &[Planned<'_>],
    config: &LoraConfig,
    varmap: &VarMap,
    adapter: &str,
    made: &mut Vec<String>,
) -> Result<HashMap<String, Vec<Change>>, PeftError> {
    let mut changes = HashMap::with_capacity(planned.len());
    for Planned {
        target,
        naming,
        weight,
        rows,
        cols,
        experts: bank,
        names: [a_name, b_name],
    } in planned
    {
        let experts = bank.unwrap_or(1);
        let path = target.path.as_str();
        let error = |source: candle_core::Error| PeftError::Tensor {
            path: path.to_owned(),
            message: source.to_string(),
        };
        let vb = VarBuilder::from_varmap(varmap, weight.dtype(), weight.device());
        let r = target.rank as usize;
        // A bank's factors hold every expert's: A [E·r, in], B [out, r·E].
        let er = r * experts;
        let (a_init, a_shape, b_init, b_shape) = match naming {
            // table [num, dim]: A [r, num] zero, B [dim, r] standard normal
            FactorNaming::Embedding => (
                Init::Const(0.0),
                (r, *rows),
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
                (*cols, r),
            ),
            // weight [out, in]: A [r, in] Kaiming-uniform with a = sqrt(5), B [out, r] zero
            FactorNaming::Linear => {
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "layer widths are far below 2^52"
                )]
                let bound = 1.0 / (*cols as f64).sqrt();
                (
                    Init::Uniform {
                        lo: -bound,
                        up: bound,
                    },
                    (er, *cols),
                    Init::Const(0.0),
                    (*rows, er),
                )
            }
        };
        let a = vb.get_with_hints(a_shape, a_name, a_init).map_err(error)?;
        made.push(a_name.clone());
        let b = vb.get_with_hints(b_shape, b_name, b_init).map_err(error)?;
        made.push(b_name.clone());
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a dropout probability fits an f32"
        )]
        let dropout = match naming {
            FactorNaming::Embedding => 0.0,
            FactorNaming::Linear => config.lora_dropout as f32,
        };
        if bank.is_some() {
            let bank_adapter = ExpertAdapter::new(a, b, experts, target.alpha, config.use_rslora)
                .map_err(|source| PeftError::Tensor {
                path: path.to_owned(),
                message: source.to_string(),
            })?;
            changes.insert(
                target.path.clone(),
                vec![Change::AttachBank(adapter.to_owned(), bank_adapter)],
            );
            continue;
        }
        let lora = LoraAdapter::new(a, b, target.alpha, config.use_rslora)
            .map_err(|source| PeftError::Tensor {
                path: path.to_owned(),
                message: source.to_string(),
            })?
            .with_dropout(dropout);
        changes.insert(
            target.path.clone(),
            vec![Change::Attach(adapter.to_owned(), lora)],
        );
    }
    Ok(changes)
}
