//! Experts fused in one weight: a bank of `E` routed experts' linear maps held in one 3-D tensor,
//! as transformers 5 holds every MoE model's experts (`mlp.experts.gate_up_proj [E, 2I, H]`,
//! `down_proj [E, H, I]`, each expert `[out, in]`), with LoRA as PEFT 0.21's `ParamWrapper`
//! computes it (`peft/tuners/lora/layer.py`, `ParamWrapper.get_delta_weight`).
//!
//! An [`ExpertBank`] is a `grouped_linear` leaf at the parameter's path, always a routed expert.
//! Its [`ExpertAdapter`] has one rank `r` per expert and two factors: `A: [E·r, in]`,
//! expert-major (rows `e·r .. e·r + r` are expert `e`'s `A_e: [r, in]`), and `B: [out, r·E]`,
//! rank-major (column `k·E + e` is column `k` of expert `e`'s `B_e: [out, r]`). Expert `e`'s
//! delta is `ΔW_e = scale · B_e A_e`, `scale = alpha / r` (`alpha / √r` with rsLoRA). The bank
//! computes one expert at a time ([`ExpertBank::forward_expert`]) on the tokens routed to it.

use candle_core::{D, Tensor};

use crate::candle::adapter::{check_settings, project, shape_error};
use crate::candle::error::LoraError;
use crate::candle::store::Adapters;
use crate::kind::Kind;

/// One LoRA adapter of an [`ExpertBank`]: per-expert factors of one rank, in PEFT's
/// `ParamWrapper` layout: `A: [E·r, in]` expert-major, `B: [out, r·E]` rank-major.
#[derive(Clone, Debug)]
pub struct ExpertAdapter {
    a: Tensor,
    b: Tensor,
    experts: usize,
    alpha: f64,
    rslora: bool,
}

impl ExpertAdapter {
    /// An adapter of `experts` experts from `a: [E·r, in]` (expert-major) and `b: [out, r·E]`
    /// (rank-major).
    ///
    /// # Errors
    ///
    /// [`LoraError::Shape`] when a factor is not a matrix, its expert axis does not divide by
    /// `experts`, or the two give different ranks; [`LoraError::Settings`] for a rank of 0 or an
    /// alpha that is not finite.
    pub fn new(
        a: Tensor,
        b: Tensor,
        experts: usize,
        alpha: f64,
        rslora: bool,
    ) -> Result<Self, LoraError> {
        let rows = match a.dims() {
            [rows, _] if experts > 0 && rows % experts == 0 => *rows,
            found => {
                return Err(shape_error(
                    "A",
                    &[experts, 0],
                    found,
                    "[experts·r, in_features]",
                ));
            }
        };
        let rank = rows / experts;
        match b.dims() {
            [_, columns] if *columns == rows => {}
            found => {
                let output = found.first().copied().unwrap_or(0);
                return Err(shape_error(
                    "B",
                    &[output, rows],
                    found,
                    "[out_features, r·experts]",
                ));
            }
        }
        check_settings(rank, alpha)?;
        Ok(ExpertAdapter {
            a,
            b,
            experts,
            alpha,
            rslora,
        })
    }

    /// `A: [E·r, in]`, expert-major.
    #[must_use]
    pub fn a(&self) -> &Tensor {
        &self.a
    }

    /// `B: [out, r·E]`, rank-major.
    #[must_use]
    pub fn b(&self) -> &Tensor {
        &self.b
    }

    /// The number of experts `E`.
    #[must_use]
    pub fn experts(&self) -> usize {
        self.experts
    }

    /// The per-expert rank `r`.
    #[must_use]
    pub fn rank(&self) -> usize {
        self.a.dims().first().copied().unwrap_or(0) / self.experts.max(1)
    }

    /// The alpha.
    #[must_use]
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Whether the scale is `alpha / √r`.
    #[must_use]
    pub fn is_rslora(&self) -> bool {
        self.rslora
    }

    /// `alpha / r`, or `alpha / √r` with rsLoRA.
    #[must_use]
    pub fn scale(&self) -> f64 {
        crate::peft::scale(
            u32::try_from(self.rank()).unwrap_or(u32::MAX),
            self.alpha,
            self.rslora,
        )
    }

    /// Expert `e`'s factors: `A_e: [r, in]` and `B_e: [out, r]`.
    ///
    /// # Errors
    ///
    /// When `e` is out of range or a tensor operation fails.
    pub fn expert_factors(&self, expert: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let rank = self.rank();
        let a = self.a.narrow(0, expert * rank, rank)?;
        let (out, _) = self.b.dims2()?;
        let b = self
            .b
            .reshape((out, rank, self.experts))?
            .narrow(2, expert, 1)?
            .squeeze(2)?
            .contiguous()?;
        Ok((a, b))
    }

    /// Every expert's delta, `scale · B_e A_e`, as `[E, out, in]`.
    ///
    /// # Errors
    ///
    /// When a tensor operation fails.
    pub fn delta_weight(&self) -> candle_core::Result<Tensor> {
        let rank = self.rank();
        let (_, input) = self.a.dims2()?;
        let (out, _) = self.b.dims2()?;
        // A: [E, r, in]; B: [out, r, E] → [E, out, r].
        let a = self.a.reshape((self.experts, rank, input))?;
        let b = self
            .b
            .reshape((out, rank, self.experts))?
            .permute((2, 0, 1))?
            .contiguous()?;
        b.matmul(&a)?.affine(self.scale(), 0.0)
    }
}

/// `E` experts' linear maps in one weight, `[E, out, in]` (or `[E, in, out]`, transposed, as
/// some checkpoints store them), with named [`ExpertAdapter`]s, one active, that merge and
/// unmerge like a [`LoraLinear`](crate::candle::LoraLinear)'s.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use moduletree::candle::{ExpertAdapter, ExpertBank};
///
/// let device = Device::Cpu;
/// // 2 experts, each [out 3, in 2].
/// let weight = Tensor::ones((2, 3, 2), DType::F32, &device).unwrap();
/// let mut bank = ExpertBank::new(weight).unwrap();
/// // r = 1 per expert: A [2·1, 2], B [3, 1·2].
/// let a = Tensor::ones((2, 2), DType::F32, &device).unwrap();
/// let b = Tensor::ones((3, 2), DType::F32, &device).unwrap();
/// bank.add_adapter("default", ExpertAdapter::new(a, b, 2, 2.0, false).unwrap()).unwrap();
/// let x = Tensor::new(&[[1f32, 2.]], &device).unwrap();
/// // base: 1 + 2 = 3; adapter: scale 2/1 · (1 + 2) = 6
/// let y = bank.forward_expert(1, &x).unwrap();
/// assert_eq!(y.to_vec2::<f32>().unwrap(), [[9., 9., 9.]]);
/// ```
#[derive(Clone, Debug)]
pub struct ExpertBank {
    weight: Tensor,
    transposed: bool,
    adapters: Adapters<ExpertAdapter>,
}

impl ExpertBank {
    /// A bank of `weight: [E, out, in]`, as transformers 5 holds `gate_up_proj` and `down_proj`.
    ///
    /// # Errors
    ///
    /// [`LoraError::Shape`] when `weight` is not 3-D.
    pub fn new(weight: Tensor) -> Result<Self, LoraError> {
        ExpertBank::with_layout(weight, false)
    }

    /// A bank of `weight: [E, in, out]`.
    ///
    /// # Errors
    ///
    /// [`LoraError::Shape`] when `weight` is not 3-D.
    pub fn transposed(weight: Tensor) -> Result<Self, LoraError> {
        ExpertBank::with_layout(weight, true)
    }

    fn with_layout(weight: Tensor, transposed: bool) -> Result<Self, LoraError> {
        if weight.rank() != 3 {
            return Err(LoraError::Shape {
                name: "weight".to_owned(),
                path: String::new(),
                expected: vec![0, 0, 0],
                found: weight.dims().to_vec(),
                axes: if transposed {
                    "[experts, in_features, out_features]"
                } else {
                    "[experts, out_features, in_features]"
                },
            });
        }
        Ok(ExpertBank {
            weight,
            transposed,
            adapters: Adapters::default(),
        })
    }

    /// The weight as stored (with the merged adapter folded in, if one is merged).
    #[must_use]
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Whether the weight is stored `[E, in, out]`.
    #[must_use]
    pub fn is_transposed(&self) -> bool {
        self.transposed
    }

    /// The number of experts `E`.
    #[must_use]
    pub fn num_experts(&self) -> usize {
        self.weight.dims().first().copied().unwrap_or(0)
    }

    /// Each expert's input width.
    #[must_use]
    pub fn in_features(&self) -> usize {
        let dims = self.weight.dims();
        if self.transposed { dims[1] } else { dims[2] }
    }

    /// Each expert's output width.
    #[must_use]
    pub fn out_features(&self) -> usize {
        let dims = self.weight.dims();
        if self.transposed { dims[2] } else { dims[1] }
    }

    /// Expert `e`'s weight as `[out, in]`.
    ///
    /// # Errors
    ///
    /// When `e` is out of range or a tensor operation fails.
    pub fn expert_weight(&self, expert: usize) -> candle_core::Result<Tensor> {
        let weight = self.weight.get(expert)?;
        if self.transposed {
            weight.t()?.contiguous()
        } else {
            Ok(weight)
        }
    }

    /// Expert `e` applied to `x: [..., in]` (the tokens routed to it): `x W_eᵀ`, plus
    /// `scale · (x A_eᵀ) B_eᵀ` from the active adapter unless it is merged or adapters are
    /// disabled.
    ///
    /// # Errors
    ///
    /// When `e` is out of range, `x`'s last axis is not `in_features`, or a tensor operation
    /// fails.
    pub fn forward_expert(&self, expert: usize, x: &Tensor) -> candle_core::Result<Tensor> {
        let weight = self.weight.get(expert)?;
        let base = if self.transposed {
            let (rows, features) = (x.elem_count() / x.dim(D::Minus1)?.max(1), x.dim(D::Minus1)?);
            let mut dims = x.dims().to_vec();
            let last = dims.len() - 1;
            dims[last] = self.out_features();
            x.reshape((rows, features))?
                .matmul(&weight)?
                .reshape(dims)?
        } else {
            project(x, &weight)?
        };
        match self.adapters.unmerged_active() {
            Some(adapter) => {
                let (a, b) = adapter.expert_factors(expert)?;
                let delta = project(&project(x, &a)?, &b)?.affine(adapter.scale(), 0.0)?;
                base + delta
            }
            None => Ok(base),
        }
    }

    /// The adapters, in the order they were added.
    pub fn adapters(&self) -> impl Iterator<Item = (&str, &ExpertAdapter)> {
        self.adapters.iter()
    }

    /// The adapter named `name`.
    #[must_use]
    pub fn adapter(&self, name: &str) -> Option<&ExpertAdapter> {
        self.adapters.get(name)
    }

    /// The active adapter and its name.
    #[must_use]
    pub fn active_adapter(&self) -> Option<(&str, &ExpertAdapter)> {
        self.adapters.active()
    }

    /// Whether the active adapter is merged into the weight.
    #[must_use]
    pub fn is_merged(&self) -> bool {
        self.adapters.merged.is_some()
    }

    /// Whether adapters are enabled.
    #[must_use]
    pub fn adapters_enabled(&self) -> bool {
        !self.adapters.disabled
    }

    /// Enables or disables the adapters without removing them.
    ///
    /// # Errors
    ///
    /// [`LoraError::Merged`] when disabling while an adapter is merged.
    pub fn set_adapters_enabled(&mut self, enabled: bool) -> Result<(), LoraError> {
        if !enabled {
            self.adapters.check_not_merged()?;
        }
        self.adapters.disabled = !enabled;
        Ok(())
    }

    /// Adds an adapter under `name`; the first adapter added becomes active.
    ///
    /// # Errors
    ///
    /// [`LoraError::Shape`] when the adapter's experts or widths are not the bank's;
    /// [`LoraError::DuplicateAdapter`] when the name is taken.
    pub fn add_adapter(&mut self, name: &str, adapter: ExpertAdapter) -> Result<(), LoraError> {
        self.check_adapter(name, &adapter)?;
        self.adapters.push(name, adapter);
        Ok(())
    }

    pub(crate) fn check_adapter(
        &self,
        name: &str,
        adapter: &ExpertAdapter,
    ) -> Result<(), LoraError> {
        self.adapters.check_new(name)?;
        let (experts, rank) = (self.num_experts(), adapter.rank());
        let expected_a = [experts * rank, self.in_features()];
        let expected_b = [self.out_features(), rank * experts];
        if adapter.experts != experts || adapter.a.dims() != expected_a {
            return Err(shape_error(
                "A",
                &expected_a,
                adapter.a.dims(),
                "[experts·r, in_features]",
            ));
        }
        if adapter.b.dims() != expected_b {
            return Err(shape_error(
                "B",
                &expected_b,
                adapter.b.dims(),
                "[out_features, r·experts]",
            ));
        }
        Ok(())
    }

    /// Adds an adapter already checked against the bank.
    pub(crate) fn adapters_push(&mut self, name: &str, adapter: ExpertAdapter) {
        self.adapters.push(name, adapter);
    }

    /// Replaces the weight; used when an adapter is folded in at load.
    pub(crate) fn set_weight(&mut self, weight: Tensor) {
        self.weight = weight;
    }

    /// Makes `name` the active adapter, or none with `None`.
    ///
    /// # Errors
    ///
    /// [`LoraError::MissingAdapter`] for an unknown name; [`LoraError::Merged`] while an adapter
    /// is merged.
    pub fn set_active_adapter(&mut self, name: Option<&str>) -> Result<(), LoraError> {
        self.adapters.set_active(name)
    }

    /// Removes the adapter named `name` and returns it.
    ///
    /// # Errors
    ///
    /// As [`set_active_adapter`](Self::set_active_adapter).
    pub fn remove_adapter(&mut self, name: &str) -> Result<ExpertAdapter, LoraError> {
        self.adapters.remove(name)
    }

    /// Folds the active adapter into the weight: `W_e += scale · B_e A_e` for every expert.
    ///
    /// # Errors
    ///
    /// When the tensor operations fail; the bank is then unchanged.
    pub fn merge(&mut self) -> Result<(), LoraError> {
        let transposed = self.transposed;
        let fold = if transposed {
            fold_transposed
        } else {
            fold_plain
        };
        self.adapters.merge(&mut self.weight, fold)
    }

    /// Subtracts the merged adapter again (exact up to float rounding).
    ///
    /// # Errors
    ///
    /// When the tensor operations fail; the bank is then unchanged.
    pub fn unmerge(&mut self) -> Result<(), LoraError> {
        let fold = if self.transposed {
            fold_transposed
        } else {
            fold_plain
        };
        self.adapters.unmerge(&mut self.weight, fold)
    }
}

/// `weight + sign · delta` for a `[E, out, in]` weight.
fn fold_plain(weight: &Tensor, adapter: &ExpertAdapter, sign: f64) -> candle_core::Result<Tensor> {
    merged_weight(weight, adapter, sign, false)
}

/// `weight + sign · deltaᵀ` for a `[E, in, out]` weight.
fn fold_transposed(
    weight: &Tensor,
    adapter: &ExpertAdapter,
    sign: f64,
) -> candle_core::Result<Tensor> {
    merged_weight(weight, adapter, sign, true)
}

/// The bank weight with `sign · ΔW` added, in the weight's layout, dtype and device.
pub(crate) fn merged_weight(
    weight: &Tensor,
    adapter: &ExpertAdapter,
    sign: f64,
    transposed: bool,
) -> candle_core::Result<Tensor> {
    let mut delta = adapter.delta_weight()?.affine(sign, 0.0)?;
    if transposed {
        delta = delta.transpose(1, 2)?;
    }
    let delta = delta.to_dtype(weight.dtype())?.to_device(weight.device())?;
    weight + delta
}

crate::impls::leaf_layers! {
    ExpertBank => Kind::GroupedLinear;
}
