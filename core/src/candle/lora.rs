//! LoRA slots: a base layer plus named low-rank adapters, one active.
//!
//! [`LoraLinear`] computes `base(x) + scale · B(A(dropout(x)))` with `A: [r, in]`,
//! `B: [out, r]` and `scale = alpha / r` (or `alpha / sqrt(r)` with rsLoRA), exactly as PEFT's
//! `lora.Linear`. [`LoraEmbedding`] does the same for a lookup table, with PEFT's
//! `lora_embedding_A: [r, num_embeddings]` and `lora_embedding_B: [embedding_dim, r]`.
//! `merge` folds the active adapter into the base weight and `unmerge` subtracts it again. Both
//! slots are leaf layers whose run-time expert flag
//! [`set_linear_is_expert`](crate::set_linear_is_expert) sets.

use candle_core::{Module, Tensor};
use candle_nn::{Embedding, Linear};

use crate::candle::adapter::{LoraAdapter, check_factors, project};
use crate::candle::error::LoraError;
use crate::candle::store::Adapters;
use crate::kind::Kind;
use crate::tree::ModuleTree;
use crate::walk::walk_mut;

pub use crate::peft::DEFAULT_ADAPTER;

/// The methods both slots share: the base, the adapters by name, the active one, merging, and
/// the expert flag. `$input` / `$output` are the slot's methods giving the widths `A` and `B`
/// must match, with the axes named in errors.
macro_rules! slot_methods {
    (
        $ty:ident, $base:ty, $fold:path, $what:literal,
        ($input:ident, $a_axes:literal), ($output:ident, $b_axes:literal)
    ) => {
        impl $ty {
            #[doc = concat!("The base ", $what, " (with the merged adapter folded in, if one is merged).")]
            #[must_use]
            pub fn base(&self) -> &$base {
                &self.base
            }

            /// The adapters, in the order they were added.
            pub fn adapters(&self) -> impl Iterator<Item = (&str, &LoraAdapter)> {
                self.adapters
                    .named
                    .iter()
                    .map(|(name, adapter)| (name.as_str(), adapter))
            }

            /// The adapter named `name`.
            #[must_use]
            pub fn adapter(&self, name: &str) -> Option<&LoraAdapter> {
                self.adapters.get(name)
            }

            /// The active adapter and its name.
            #[must_use]
            pub fn active_adapter(&self) -> Option<(&str, &LoraAdapter)> {
                self.adapters.active()
            }

            /// Whether adapters are enabled: a disabled slot computes its base alone, keeping
            /// its adapters (PEFT's `disable_adapter`, for a DPO reference model).
            #[must_use]
            pub fn adapters_enabled(&self) -> bool {
                !self.adapters.disabled
            }

            /// Enables or disables the slot's adapters without removing them.
            ///
            /// # Errors
            ///
            /// [`LoraError::Merged`] when disabling while an adapter is merged (unmerge first);
            /// the slot is then unchanged.
            pub fn set_adapters_enabled(&mut self, enabled: bool) -> Result<(), LoraError> {
                if !enabled {
                    self.adapters.check_not_merged()?;
                }
                self.adapters.disabled = !enabled;
                Ok(())
            }

            #[doc = concat!("Whether the active adapter is merged into the base ", $what, ".")]
            #[must_use]
            pub fn is_merged(&self) -> bool {
                self.adapters.merged.is_some()
            }

            /// The name of the adapter merged into the base, if any.
            pub(crate) fn merged_adapter(&self) -> Option<&str> {
                self.adapters.merged_name()
            }

            /// The run-time expert flag, set by
            /// [`set_linear_is_expert`](crate::set_linear_is_expert).
            #[must_use]
            pub fn is_expert(&self) -> bool {
                self.is_expert
            }

            /// Adds an adapter under `name`; the first adapter added becomes active.
            ///
            /// # Errors
            ///
            #[doc = concat!("[`LoraError::Shape`] when `A` is not `", $a_axes, "` or `B` not `", $b_axes, "`;")]
            /// [`LoraError::DuplicateAdapter`] when the name is taken.
            pub fn add_adapter(&mut self, name: &str, adapter: LoraAdapter) -> Result<(), LoraError> {
                self.check_adapter(name, &adapter)?;
                self.adapters.push(name, adapter);
                Ok(())
            }

            pub(crate) fn check_adapter(&self, name: &str, adapter: &LoraAdapter) -> Result<(), LoraError> {
                self.adapters.check_new(name)?;
                check_factors(adapter, (self.$input(), $a_axes), (self.$output(), $b_axes))
            }

            /// Adds an adapter already checked by [`check_adapter`](Self::check_adapter).
            pub(crate) fn adapters_push(&mut self, name: &str, adapter: LoraAdapter) {
                self.adapters.push(name, adapter);
            }

            /// Makes `name` the active adapter, or none with `None`.
            ///
            /// # Errors
            ///
            /// [`LoraError::MissingAdapter`] for an unknown name; [`LoraError::Merged`] while an
            /// adapter is merged.
            pub fn set_active_adapter(&mut self, name: Option<&str>) -> Result<(), LoraError> {
                self.adapters.set_active(name)
            }

            /// Removes the adapter named `name` and returns it.
            ///
            /// # Errors
            ///
            /// [`LoraError::MissingAdapter`] for an unknown name; [`LoraError::Merged`] while an
            /// adapter is merged.
            pub fn remove_adapter(&mut self, name: &str) -> Result<LoraAdapter, LoraError> {
                self.adapters.remove(name)
            }

            #[doc = concat!("Folds the active adapter into the base ", $what, ".")]
            /// Nothing happens when no adapter is active or it is already merged.
            ///
            /// # Errors
            ///
            /// When the tensor operations fail; the slot is then unchanged.
            pub fn merge(&mut self) -> Result<(), LoraError> {
                self.adapters.merge(&mut self.base, $fold)
            }

            #[doc = concat!("Subtracts the merged adapter from the base ", $what, " again (exact up to")]
            /// float rounding). Nothing happens when none is merged.
            ///
            /// # Errors
            ///
            /// When the tensor operations fail; the slot is then unchanged.
            pub fn unmerge(&mut self) -> Result<(), LoraError> {
                self.adapters.unmerge(&mut self.base, $fold)
            }

            #[doc = concat!("Replaces the base ", $what, "; used when an adapter is folded in with `LoadMode::Merge`.")]
            pub(crate) fn set_base(&mut self, base: $base) {
                self.base = base;
            }
        }
    };
}

/// A linear layer that can hold LoRA adapters: declare `q_proj: LoraLinear` once and the model
/// takes adapters by name, trains them, merges them, or runs without them.
///
/// With no adapter, or none active, it is exactly its base `candle_nn::Linear`.
///
/// ```
/// use candle_core::{DType, Device, Module, Tensor};
/// use moduletree::candle::{LoraAdapter, LoraLinear};
///
/// let device = Device::Cpu;
/// let weight = Tensor::ones((3, 2), DType::F32, &device).unwrap();
/// let mut layer = LoraLinear::new(candle_nn::Linear::new(weight, None));
/// let a = Tensor::ones((1, 2), DType::F32, &device).unwrap();
/// let b = Tensor::ones((3, 1), DType::F32, &device).unwrap();
/// layer.add_adapter("default", LoraAdapter::new(a, b, 2.0, false).unwrap()).unwrap();
///
/// let x = Tensor::new(&[[1f32, 2.]], &device).unwrap();
/// // base: 1 + 2 = 3; adapter: scale 2/1 · (1 + 2) = 6
/// assert_eq!(layer.forward(&x).unwrap().to_vec2::<f32>().unwrap(), [[9., 9., 9.]]);
/// layer.merge().unwrap();
/// assert_eq!(layer.forward(&x).unwrap().to_vec2::<f32>().unwrap(), [[9., 9., 9.]]);
/// ```
#[derive(Clone, Debug)]
pub struct LoraLinear {
    base: Linear,
    adapters: Adapters,
    is_expert: bool,
    training: bool,
}

impl From<Linear> for LoraLinear {
    fn from(base: Linear) -> Self {
        LoraLinear::new(base)
    }
}

impl LoraLinear {
    /// A slot holding `base` and no adapter.
    #[must_use]
    pub fn new(base: Linear) -> Self {
        LoraLinear {
            base,
            adapters: Adapters::default(),
            is_expert: false,
            training: false,
        }
    }

    /// `in_features`: the base weight's second axis.
    #[must_use]
    pub fn in_features(&self) -> usize {
        self.base.weight().dim(1).unwrap_or(0)
    }

    /// `out_features`: the base weight's first axis.
    #[must_use]
    pub fn out_features(&self) -> usize {
        self.base.weight().dim(0).unwrap_or(0)
    }

    /// Whether `forward` applies the adapters' dropout.
    #[must_use]
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Turns the adapters' dropout on (`true`) or off in `forward`.
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// `forward` with the adapter's dropout on (`train`) or off, whatever
    /// [`is_training`](Self::is_training) says.
    ///
    /// # Errors
    ///
    /// When the tensor operations fail (a wrong input width, mismatched devices).
    pub fn forward_train(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.lora_forward(x, train)
    }

    fn lora_forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.base.forward(x)?;
        match self.adapters.unmerged_active() {
            None => Ok(y),
            Some(adapter) => {
                // Scaling the `r`-wide intermediate costs far less than scaling the output.
                let down =
                    project(&adapter.input(x, train)?, &adapter.a)?.affine(adapter.scale(), 0.0)?;
                y + project(&down, &adapter.b)?
            }
        }
    }
}

/// `base` with `sign · scale · B · A` added to its weight, in the weight's dtype and device.
pub(crate) fn merged_linear(
    base: &Linear,
    adapter: &LoraAdapter,
    sign: f64,
) -> candle_core::Result<Linear> {
    let weight = base.weight();
    let delta = adapter
        .delta_weight()?
        .affine(sign, 0.0)?
        .to_dtype(weight.dtype())?
        .to_device(weight.device())?;
    Ok(Linear::new((weight + delta)?, base.bias().cloned()))
}

/// `base` with `sign · (scale · B · A)ᵀ` added to its table, for embeddings.
pub(crate) fn merged_embedding(
    base: &Embedding,
    adapter: &LoraAdapter,
    sign: f64,
) -> candle_core::Result<Embedding> {
    let table = base.embeddings();
    let delta = adapter
        .delta_weight()?
        .t()?
        .affine(sign, 0.0)?
        .to_dtype(table.dtype())?
        .to_device(table.device())?;
    Ok(Embedding::new((table + delta)?, base.hidden_size()))
}

impl Module for LoraLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.lora_forward(x, self.training)
    }
}

/// An embedding that can hold LoRA adapters (PEFT's `lora_embedding_A` / `lora_embedding_B`).
///
/// `forward(ids) = base(ids) + scale · (Aᵀ[ids]) · Bᵀ`, with `A: [r, num_embeddings]` and
/// `B: [embedding_dim, r]`. Embedding adapters have no dropout, as in PEFT.
#[derive(Clone, Debug)]
pub struct LoraEmbedding {
    base: Embedding,
    adapters: Adapters,
    is_expert: bool,
}

impl From<Embedding> for LoraEmbedding {
    fn from(base: Embedding) -> Self {
        LoraEmbedding::new(base)
    }
}

impl LoraEmbedding {
    /// A slot holding `base` and no adapter.
    #[must_use]
    pub fn new(base: Embedding) -> Self {
        LoraEmbedding {
            base,
            adapters: Adapters::default(),
            is_expert: false,
        }
    }

    /// The number of rows of the table.
    #[must_use]
    pub fn num_embeddings(&self) -> usize {
        self.base.embeddings().dim(0).unwrap_or(0)
    }

    /// The width of a row.
    #[must_use]
    pub fn embedding_dim(&self) -> usize {
        self.base.hidden_size()
    }
}

impl Module for LoraEmbedding {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.base.forward(ids)?;
        match self.adapters.unmerged_active() {
            None => Ok(y),
            Some(adapter) => {
                let table = adapter.a.t()?.contiguous()?;
                let mut out_dims = ids.dims().to_vec();
                out_dims.push(adapter.rank());
                let down = table
                    .index_select(&ids.flatten_all()?, 0)?
                    .reshape(out_dims)?
                    .affine(adapter.scale(), 0.0)?;
                y + project(&down, &adapter.b)?
            }
        }
    }
}

crate::impls::leaf_layers! {
    LoraLinear => Kind::Linear, expert_flag = is_expert;
    LoraEmbedding => Kind::Embedding, expert_flag = is_expert;
}
slot_methods!(
    LoraLinear,
    Linear,
    merged_linear,
    "weight",
    (in_features, "[r, in_features]"),
    (out_features, "[out_features, r]")
);
slot_methods!(
    LoraEmbedding,
    Embedding,
    merged_embedding,
    "table",
    (num_embeddings, "[r, num_embeddings]"),
    (embedding_dim, "[embedding_dim, r]")
);

/// Turns the adapters' dropout on or off in every [`LoraLinear`] of `model`; returns how many
/// slots were set.
pub fn set_lora_training<T: ModuleTree + ?Sized>(model: &mut T, training: bool) -> usize {
    let mut count = 0;
    walk_mut(model, |node| {
        if let Some(slot) = node.downcast_mut::<LoraLinear>() {
            slot.set_training(training);
            count += 1;
        }
    });
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn slot() -> (LoraLinear, Tensor) {
        let device = Device::Cpu;
        let weight = Tensor::arange(0f32, 12., &device)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let slot = LoraLinear::new(Linear::new(weight, None));
        let x = Tensor::new(&[[1f32, -2., 0.5, 3.]], &device).unwrap();
        (slot, x)
    }

    #[test]
    fn merge_then_unmerge_restores_the_weight() {
        let (mut slot, x) = slot();
        let before = slot.base().weight().to_vec2::<f32>().unwrap();
        let a = Tensor::new(&[[0.5f32, 1., -1., 2.], [1., 0., 0.25, -0.5]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[1f32, 2.], [-1., 0.5], [0., 3.]], &Device::Cpu).unwrap();
        slot.add_adapter("x", LoraAdapter::new(a, b, 4.0, true).unwrap())
            .unwrap();
        let unmerged = slot.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        slot.merge().unwrap();
        assert!(slot.is_merged());
        assert_ne!(slot.base().weight().to_vec2::<f32>().unwrap(), before);
        let merged = slot.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        for (u, m) in unmerged[0].iter().zip(&merged[0]) {
            assert!((u - m).abs() < 1e-4, "{u} vs {m}");
        }
        assert!(matches!(
            slot.set_active_adapter(None),
            Err(LoraError::Merged { .. })
        ));
        slot.unmerge().unwrap();
        assert!(!slot.is_merged());
        let after = slot.base().weight().to_vec2::<f32>().unwrap();
        for (old, new) in before.iter().flatten().zip(after.iter().flatten()) {
            // exact up to float rounding
            assert!(
                (old - new).abs() <= 1e-6 * old.abs().max(1.0),
                "{old} vs {new}"
            );
        }
    }

    #[test]
    fn rejects_mismatched_shapes_and_names() {
        let (mut slot, _) = slot();
        let a = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
        let error = slot
            .add_adapter("x", LoraAdapter::new(a, b, 1.0, false).unwrap())
            .unwrap_err();
        assert!(
            matches!(&error, LoraError::Shape { expected, found, .. } if expected == &[2, 4] && found == &[2, 5]),
            "{error}"
        );
        assert_eq!(slot.adapters().count(), 0);
        let a = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
        let adapter = LoraAdapter::new(a, b, 1.0, false).unwrap();
        slot.add_adapter("x", adapter.clone()).unwrap();
        assert!(matches!(
            slot.add_adapter("x", adapter),
            Err(LoraError::DuplicateAdapter { .. })
        ));
    }
}
