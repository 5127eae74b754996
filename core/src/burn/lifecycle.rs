//! An adapted burn model's adapters as a whole, as PEFT's `PeftModel` offers them: each layer's
//! status, parameter counts, and the factors as two parameter groups (so that LoRA+ can give `B`
//! its own learning rate).
//!
//! burn 0.22 re-attaches a weight's `LoraAdapter` after any module mapping, and keeps one adapter
//! per weight, so a burn model has no "disabled" state: for the base model's outputs (a DPO
//! reference), keep the model from before `apply_lora` (burn modules are cheap to clone).

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::tensor::Tensor;

use crate::ModuleTree;
use crate::Node;
use crate::burn::ExpertBank;
use crate::burn::peft::weight_ref;
use crate::peft::{DEFAULT_ADAPTER as ADAPTER, LayerStatus, ParameterCounts};
use crate::walk::walk;

/// The `A` and `B` parameter ids of the adapter at a node: a burn `Linear`'s or `Embedding`'s
/// `LoraAdapter`, or an [`ExpertBank`]'s `ExpertLora`.
fn factor_ids(node: &Node<'_, '_>) -> Option<(ParamId, ParamId)> {
    match weight_ref(node) {
        Some((weight, ..)) => weight.adapter().map(|adapter| (adapter.a.id, adapter.b.id)),
        None => node
            .downcast_ref::<ExpertBank>()
            .and_then(|bank| bank.lora.as_ref())
            .map(|lora| (lora.a.id, lora.b.id)),
    }
}

/// Every burn `Linear`, `Embedding` and [`ExpertBank`] that carries an adapter, in walk order:
/// one adapter, `"default"`, active and enabled, never merged (merging removes it). PEFT's
/// `get_layer_status`.
#[must_use]
pub fn adapter_status<M: ModuleTree + ?Sized>(model: &M) -> Vec<LayerStatus> {
    let mut layers = Vec::new();
    walk(model, |node| {
        if factor_ids(node).is_some() {
            layers.push(LayerStatus {
                path: node.path().to_string(),
                adapters: vec![ADAPTER.to_owned()],
                active: Some(ADAPTER.to_owned()),
                merged: false,
                enabled: true,
            });
        }
    });
    layers
}

/// The model's parameter counts: every float parameter's elements, adapter factors included,
/// and of those the factors' (burn's `LoraAdapter`s and `ExpertLora`s).
#[must_use]
pub fn parameter_counts<M: Module>(model: &M) -> ParameterCounts {
    let mut counter = Counter::default();
    model.visit(&mut counter);
    counter.counts
}

#[derive(Default)]
struct Counter {
    counts: ParameterCounts,
    /// How deep the visit is inside adapters.
    adapter_depth: usize,
}

/// Whether a burn visit entering a field of `container_type` enters an adapter: burn visits a
/// parameter's `LoraAdapter` as a `"Reparameterization"`, and the derived `Module` of
/// [`ExpertLora`] names its fields' container `"Struct:ExpertLora"`.
fn is_adapter(container_type: &str) -> bool {
    matches!(container_type, "Reparameterization" | "Struct:ExpertLora")
}

impl ModuleVisitor for Counter {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        if is_adapter(container_type) {
            self.adapter_depth += 1;
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if is_adapter(container_type) {
            self.adapter_depth = self.adapter_depth.saturating_sub(1);
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let elements = param.lazy_shape().num_elements();
        self.counts.total += elements;
        if self.adapter_depth > 0 {
            self.counts.trainable += elements;
        }
    }
}

/// The adapters' `A` and `B` factors as two burn parameter groups (by parameter id), for an
/// optimizer per group: LoRA+ trains `B` with a larger learning rate.
#[must_use]
pub fn lora_factor_groups<M: ModuleTree + ?Sized>(model: &M) -> (ParamGroup, ParamGroup) {
    let (mut a, mut b): (Vec<ParamId>, Vec<ParamId>) = (Vec::new(), Vec::new());
    walk(model, |node| {
        if let Some((a_id, b_id)) = factor_ids(node) {
            a.push(a_id);
            b.push(b_id);
        }
    });
    (ParamGroup::from_ids(a), ParamGroup::from_ids(b))
}
