//! The layers of a model that adapters can reach, surveyed before anything changes, and the
//! changes written afterwards.
//!
//! Applying and loading share one discipline: [`survey`] records every leaf layer (its path, what
//! it is, its base weights) without changing it; the caller checks every planned change against
//! that record and computes every new tensor; [`install`] then writes them all in one walk, with
//! operations that cannot fail. An error anywhere before [`install`] leaves the model untouched.

use std::collections::HashMap;

use candle_core::Tensor;
use candle_nn::{Embedding, Linear};

use crate::candle::adapter::LoraAdapter;
use crate::candle::bank::{ExpertAdapter, ExpertBank};
use crate::candle::lora::{LoraEmbedding, LoraLinear};
use crate::path::push_path;
use crate::tree::ModuleTree;
use crate::walk::{walk, walk_mut};

/// What a leaf layer is, as far as LoRA is concerned.
#[derive(Clone, Debug)]
pub(crate) enum Layer {
    /// A [`LoraLinear`] slot, its base and its adapters' names.
    LoraLinear(Linear, Vec<String>),
    /// A plain `candle_nn::Linear` (or a wrapper that delegates to one).
    Linear(Linear),
    /// A [`LoraEmbedding`] slot, its base and its adapters' names.
    LoraEmbedding(Embedding, Vec<String>),
    /// A plain `candle_nn::Embedding`.
    Embedding(Embedding),
    /// An [`ExpertBank`]: its weight, whether it is stored transposed, and its adapters' names.
    Bank(Tensor, bool, Vec<String>),
    /// Any other leaf.
    Other,
}

/// One surveyed leaf layer.
#[derive(Clone, Debug)]
pub(crate) struct Site {
    /// Its position in walk order.
    pub order: usize,
    /// The node's type name.
    pub type_name: &'static str,
    /// What it is.
    pub layer: Layer,
    /// The adapter merged into the slot's weight, if any.
    pub merged: Option<String>,
    /// Whether the layer is shared (behind an `Arc` or `Rc`): readable, not changeable.
    pub read_only: bool,
}

impl Site {
    /// The reference weight, for dtype and device.
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.layer {
            Layer::LoraLinear(linear, _) | Layer::Linear(linear) => Some(linear.weight()),
            Layer::LoraEmbedding(embedding, _) | Layer::Embedding(embedding) => {
                Some(embedding.embeddings())
            }
            Layer::Bank(weight, ..) => Some(weight),
            Layer::Other => None,
        }
    }

    /// Whether the layer is an embedding (slot or plain).
    pub fn is_embedding(&self) -> bool {
        matches!(self.layer, Layer::LoraEmbedding(..) | Layer::Embedding(_))
    }

    /// The slot type that would hold an adapter for this layer.
    pub fn slot_name(&self) -> &'static str {
        if self.is_embedding() {
            "LoraEmbedding"
        } else {
            "LoraLinear"
        }
    }
}

/// Every leaf layer of `model` by path. Reads only: the mutable walk is needed only to learn
/// which layers can change (a layer behind an `Arc` or `Rc` can be read, not changed).
pub(crate) fn survey<M: ModuleTree + ?Sized>(model: &mut M) -> HashMap<String, Site> {
    // Both walks visit the layers in the same order: the first records, by position, which of
    // them offer mutable access.
    let mut writable: Vec<bool> = Vec::new();
    walk_mut(model, |node| {
        if node.is_layer() {
            writable.push(
                node.downcast_mut::<LoraLinear>().is_some()
                    || node.downcast_mut::<LoraEmbedding>().is_some()
                    || node.downcast_mut::<Linear>().is_some()
                    || node.downcast_mut::<Embedding>().is_some()
                    || node.downcast_mut::<ExpertBank>().is_some(),
            );
        }
    });
    let mut sites = HashMap::new();
    let mut order = 0;
    walk(&*model, |node| {
        if !node.is_layer() {
            return;
        }
        let mut merged = None;
        let layer = if let Some(slot) = node.downcast_ref::<LoraLinear>() {
            merged = slot.merged_adapter().map(str::to_owned);
            Layer::LoraLinear(slot.base().clone(), names(slot.adapters()))
        } else if let Some(slot) = node.downcast_ref::<LoraEmbedding>() {
            merged = slot.merged_adapter().map(str::to_owned);
            Layer::LoraEmbedding(slot.base().clone(), names(slot.adapters()))
        } else if let Some(linear) = node.downcast_ref::<Linear>() {
            Layer::Linear(linear.clone())
        } else if let Some(embedding) = node.downcast_ref::<Embedding>() {
            Layer::Embedding(embedding.clone())
        } else if let Some(bank) = node.downcast_ref::<ExpertBank>() {
            let names = bank.adapters().map(|(name, _)| name.to_owned()).collect();
            Layer::Bank(bank.weight().clone(), bank.is_transposed(), names)
        } else {
            Layer::Other
        };
        let path = node.path().to_owned_string(false);
        let site = Site {
            order,
            type_name: node.type_name(),
            read_only: !matches!(layer, Layer::Other)
                && !writable.get(order).copied().unwrap_or(false),
            layer,
            merged,
        };
        order += 1;
        sites.insert(path, site);
    });
    sites
}

fn names<'x>(adapters: impl Iterator<Item = (&'x str, &'x LoraAdapter)>) -> Vec<String> {
    adapters.map(|(name, _)| name.to_owned()).collect()
}

/// One checked change to one layer.
#[derive(Debug)]
pub(crate) enum Change {
    /// Add this adapter to the slot under this name.
    Attach(String, LoraAdapter),
    /// Replace the linear (or the slot's base) with this one.
    SetLinear(Linear),
    /// Replace the embedding (or the slot's base) with this one.
    SetEmbedding(Embedding),
    /// Add this adapter to the bank under this name.
    AttachBank(String, ExpertAdapter),
    /// Replace the bank's weight (an adapter folded in).
    SetBankWeight(Tensor),
}

/// Writes every change, in one walk. Each change was checked against a [`survey`] of the same
/// model, so every write here succeeds.
pub(crate) fn install<M: ModuleTree + ?Sized>(
    model: &mut M,
    mut changes: HashMap<String, Vec<Change>>,
) {
    let mut path = String::new();
    walk_mut(model, |node| {
        if changes.is_empty() || !node.is_layer() {
            return;
        }
        path.clear();
        push_path(&mut path, node.path().segments(), false);
        let Some(steps) = changes.remove(path.as_str()) else {
            return;
        };
        for change in steps {
            apply(node, change);
        }
    });
}

/// Writes one change into the layer at `node`.
fn apply(node: &mut crate::walk::NodeMut<'_, '_>, change: Change) {
    match change {
        Change::Attach(name, adapter) => {
            if let Some(slot) = node.downcast_mut::<LoraLinear>() {
                slot.adapters_push(&name, adapter);
            } else if let Some(slot) = node.downcast_mut::<LoraEmbedding>() {
                slot.adapters_push(&name, adapter);
            }
        }
        Change::SetLinear(linear) => {
            if let Some(slot) = node.downcast_mut::<LoraLinear>() {
                slot.set_base(linear);
            } else if let Some(plain) = node.downcast_mut::<Linear>() {
                *plain = linear;
            }
        }
        Change::SetEmbedding(embedding) => {
            if let Some(slot) = node.downcast_mut::<LoraEmbedding>() {
                slot.set_base(embedding);
            } else if let Some(plain) = node.downcast_mut::<Embedding>() {
                *plain = embedding;
            }
        }
        Change::AttachBank(name, adapter) => {
            if let Some(bank) = node.downcast_mut::<ExpertBank>() {
                bank.adapters_push(&name, adapter);
            }
        }
        Change::SetBankWeight(weight) => {
            if let Some(bank) = node.downcast_mut::<ExpertBank>() {
                bank.set_weight(weight);
            }
        }
    }
}
