//! An adapted candle model's adapters as a whole, as PEFT's `PeftModel` offers them: merging and
//! unmerging them, disabling and enabling them without unloading (the base model as the
//! reference in DPO), each layer's
//! status, parameter counts, and the factors as two groups (so that LoRA+ can give `B` its own
//! learning rate).

use candle_core::{Tensor, Var};
use candle_nn::{Embedding, LayerNorm, Linear, RmsNorm, VarMap};

use crate::candle::adapter::LoraAdapter;
use crate::candle::bank::ExpertBank;
use crate::candle::error::LoraError;
use crate::candle::lora::{LoraEmbedding, LoraLinear};
use crate::peft::names::{Factor, parse_factor_name};
use crate::peft::{LayerStatus, ParameterCounts};
use crate::tree::ModuleTree;
use crate::walk::{NodeMut, walk, walk_mut};

/// Disables every slot's adapters (the model computes its base), keeping them attached; returns
/// how many slots hold adapters. PEFT's `with model.disable_adapter():`.
///
/// # Errors
///
/// [`LoraError::Merged`] (naming the slot) when a slot has an adapter merged; no slot is then
/// changed.
pub fn disable_adapters<M: ModuleTree + ?Sized>(model: &mut M) -> Result<usize, LoraError> {
    set_adapters_enabled(model, false)
}

/// Enables every slot's adapters again; returns how many slots hold adapters.
pub fn enable_adapters<M: ModuleTree + ?Sized>(model: &mut M) -> usize {
    // Enabling never fails: only disabling checks for merged adapters.
    set_adapters_enabled(model, true).unwrap_or_default()
}

fn set_adapters_enabled<M: ModuleTree + ?Sized>(
    model: &mut M,
    enabled: bool,
) -> Result<usize, LoraError> {
    if !enabled && let Some(layer) = adapter_status(&*model).into_iter().find(|l| l.merged) {
        return Err(LoraError::Merged {
            path: layer.path,
            adapter: layer.active.unwrap_or_default(),
        });
    }
    let mut slots = 0;
    let mut result = Ok(());
    walk_mut(model, |node| {
        let (changed, has) = if let Some(slot) = node.downcast_mut::<LoraLinear>() {
            (
                slot.set_adapters_enabled(enabled),
                slot.adapters().next().is_some(),
            )
        } else if let Some(slot) = node.downcast_mut::<LoraEmbedding>() {
            (
                slot.set_adapters_enabled(enabled),
                slot.adapters().next().is_some(),
            )
        } else if let Some(bank) = node.downcast_mut::<ExpertBank>() {
            (
                bank.set_adapters_enabled(enabled),
                bank.adapters().next().is_some(),
            )
        } else {
            return;
        };
        slots += usize::from(has);
        if result.is_ok() {
            result = changed;
        }
    });
    result.map(|()| slots)
}

/// Merges the active adapter of every slot into its base weight, as PEFT's `merge_adapter()`;
/// returns how many slots it merged. Slots already merged, disabled or without an active adapter
/// are left as they are.
///
/// # Errors
///
/// The first slot's error (a failed tensor operation), with its path. The slots this call merged
/// before it are unmerged again, so that the model is left as it was (up to float rounding).
pub fn merge_adapters<M: ModuleTree + ?Sized>(model: &mut M) -> Result<usize, LoraError> {
    let slots: Vec<String> = adapter_status(&*model)
        .into_iter()
        .filter(|layer| layer.active.is_some() && !layer.merged && layer.enabled)
        .map(|layer| layer.path)
        .collect();
    fold_all(model, &slots, true)
}

/// Unmerges every merged adapter from its slot's base weight, as PEFT's `unmerge_adapter()`;
/// returns how many slots it unmerged.
///
/// # Errors
///
/// As [`merge_adapters`]: on an error the slots this call unmerged are merged again.
pub fn unmerge_adapters<M: ModuleTree + ?Sized>(model: &mut M) -> Result<usize, LoraError> {
    let slots: Vec<String> = adapter_status(&*model)
        .into_iter()
        .filter(|layer| layer.merged)
        .map(|layer| layer.path)
        .collect();
    fold_all(model, &slots, false)
}

/// Merges (`merge`) or unmerges the slots at `paths`; on an error, undoes what it did.
fn fold_all<M: ModuleTree + ?Sized>(
    model: &mut M,
    paths: &[String],
    merge: bool,
) -> Result<usize, LoraError> {
    let mut done: Vec<String> = Vec::new();
    let mut failure = None;
    walk_mut(model, |node| {
        if failure.is_some() {
            return;
        }
        let path = node.path().to_string();
        if !paths.contains(&path) {
            return;
        }
        match fold(node, merge) {
            Some(Ok(())) => done.push(path),
            Some(Err(error)) => failure = Some(error),
            None => {}
        }
    });
    let Some(error) = failure else {
        return Ok(done.len());
    };
    walk_mut(model, |node| {
        if done.contains(&node.path().to_string()) {
            let _ = fold(node, !merge);
        }
    });
    Err(error)
}

/// Merges or unmerges the slot at `node`; `None` when it is no slot.
fn fold(node: &mut NodeMut<'_, '_>, merge: bool) -> Option<Result<(), LoraError>> {
    if let Some(slot) = node.downcast_mut::<LoraLinear>() {
        Some(if merge { slot.merge() } else { slot.unmerge() })
    } else if let Some(slot) = node.downcast_mut::<LoraEmbedding>() {
        Some(if merge { slot.merge() } else { slot.unmerge() })
    } else {
        node.downcast_mut::<ExpertBank>()
            .map(|bank| if merge { bank.merge() } else { bank.unmerge() })
    }
}

/// Every slot that holds adapters, in walk order: its adapters, the active one, whether it is
/// merged and whether adapters are enabled. PEFT's `get_layer_status`.
#[must_use]
pub fn adapter_status<M: ModuleTree + ?Sized>(model: &M) -> Vec<LayerStatus> {
    let mut layers = Vec::new();
    walk(model, |node| {
        let status = |adapters: Vec<String>, active: Option<&str>, merged, enabled| LayerStatus {
            path: node.path().to_string(),
            adapters,
            active: active.map(str::to_owned),
            merged,
            enabled,
        };
        let names = |adapters: &mut dyn Iterator<Item = (&str, &LoraAdapter)>| {
            adapters
                .map(|(name, _)| name.to_owned())
                .collect::<Vec<_>>()
        };
        if let Some(slot) = node.downcast_ref::<LoraLinear>() {
            let adapters = names(&mut slot.adapters());
            if !adapters.is_empty() {
                let active = slot.active_adapter().map(|(name, _)| name);
                layers.push(status(
                    adapters,
                    active,
                    slot.is_merged(),
                    slot.adapters_enabled(),
                ));
            }
        } else if let Some(bank) = node.downcast_ref::<ExpertBank>() {
            let adapters: Vec<String> = bank.adapters().map(|(name, _)| name.to_owned()).collect();
            if !adapters.is_empty() {
                let active = bank.active_adapter().map(|(name, _)| name);
                layers.push(status(
                    adapters,
                    active,
                    bank.is_merged(),
                    bank.adapters_enabled(),
                ));
            }
        } else if let Some(slot) = node.downcast_ref::<LoraEmbedding>() {
            let adapters = names(&mut slot.adapters());
            if !adapters.is_empty() {
                let active = slot.active_adapter().map(|(name, _)| name);
                layers.push(status(
                    adapters,
                    active,
                    slot.is_merged(),
                    slot.adapters_enabled(),
                ));
            }
        }
    });
    layers
}

/// The model's parameter counts: the elements of every linear's, embedding's and norm's weights
/// and biases (candle-nn's layers and the slots) and of every adapter's factors, and of those
/// the factors. Tensors a model holds outside those layers are not seen.
#[must_use]
pub fn parameter_counts<M: ModuleTree + ?Sized>(model: &M) -> ParameterCounts {
    let mut counts = ParameterCounts::default();
    let base = |linear: &Linear, counts: &mut ParameterCounts| {
        counts.total += linear.weight().elem_count() + linear.bias().map_or(0, Tensor::elem_count);
    };
    let table = |embedding: &Embedding, counts: &mut ParameterCounts| {
        counts.total += embedding.embeddings().elem_count();
    };
    let factors = |adapter: &LoraAdapter, counts: &mut ParameterCounts| {
        let n = adapter.a().elem_count() + adapter.b().elem_count();
        counts.total += n;
        counts.trainable += n;
    };
    walk(model, |node| {
        if let Some(slot) = node.downcast_ref::<LoraLinear>() {
            base(slot.base(), &mut counts);
            slot.adapters().for_each(|(_, a)| factors(a, &mut counts));
        } else if let Some(slot) = node.downcast_ref::<LoraEmbedding>() {
            table(slot.base(), &mut counts);
            slot.adapters().for_each(|(_, a)| factors(a, &mut counts));
        } else if let Some(linear) = node.downcast_ref::<Linear>() {
            base(linear, &mut counts);
        } else if let Some(embedding) = node.downcast_ref::<Embedding>() {
            table(embedding, &mut counts);
        } else if let Some(bank) = node.downcast_ref::<ExpertBank>() {
            counts.total += bank.weight().elem_count();
            for (_, adapter) in bank.adapters() {
                let n = adapter.a().elem_count() + adapter.b().elem_count();
                counts.total += n;
                counts.trainable += n;
            }
        } else if let Some(norm) = node.downcast_ref::<LayerNorm>() {
            counts.total += norm.weight().elem_count() + norm.bias().map_or(0, Tensor::elem_count);
        } else if let Some(norm) = node.downcast_ref::<RmsNorm>() {
            counts.total += norm.weight().elem_count();
        }
    });
    counts
}

/// The variables of a `VarMap` filled by [`apply_lora`](crate::candle::apply_lora), split into
/// the `A` factors and the `B` factors (sorted by name), for an optimizer per group: LoRA+ trains
/// `B` with a larger learning rate. Variables that are not LoRA factors are left out.
#[must_use]
pub fn lora_factor_vars(varmap: &VarMap) -> LoraFactorVars {
    let mut groups = LoraFactorVars::default();
    let Ok(data) = varmap.data().lock() else {
        return groups;
    };
    let mut named: Vec<(&String, &Var)> = data.iter().collect();
    named.sort_by(|left, right| left.0.cmp(right.0));
    for (name, var) in named {
        match parse_factor_name(name).map(|factor| factor.factor) {
            Some(Factor::A) => groups.a.push(var.clone()),
            Some(Factor::B) => groups.b.push(var.clone()),
            None => {}
        }
    }
    groups
}

/// The `A` and `B` factors of a `VarMap`'s adapters (see [`lora_factor_vars`]).
#[derive(Clone, Debug, Default)]
pub struct LoraFactorVars {
    /// `lora_A` / `lora_embedding_A` variables.
    pub a: Vec<Var>,
    /// `lora_B` / `lora_embedding_B` variables.
    pub b: Vec<Var>,
}
