//! Experts fused in one weight, for burn (burn-nn has no such layer): [`ExpertBank`] holds `E`
//! experts' linear maps as one `Param<Tensor<3>>` `[E, out, in]`, the layout transformers 5 uses,
//! and an optional [`ExpertLora`] with PEFT 0.21's `ParamWrapper` layout: `A: [E·r, in]`
//! expert-major, `B: [out, r·E]` rank-major, `ΔW_e = scale · B_e A_e` (the same as candle's
//! [`ExpertBank`](crate::candle::ExpertBank) when both features are on).
//!
//! The bank is a `grouped_linear` leaf (always a routed expert) at the parameter's path and
//! computes one expert at a time on the tokens routed to it. Its factors are ordinary burn
//! parameters: they train, record and save like any other; [`ExpertBank::merge`] folds them
//! into the weight.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::kind::Kind;

/// LoRA on an [`ExpertBank`]: per-expert factors of one rank.
#[derive(Module, Debug)]
pub struct ExpertLora {
    /// `A: [E·r, in]`, expert-major (rows `e·r .. e·r + r` are expert `e`'s).
    pub a: Param<Tensor<2>>,
    /// `B: [out, r·E]`, rank-major (column `k·E + e` is column `k` of expert `e`'s).
    pub b: Param<Tensor<2>>,
    /// The number of experts `E`.
    pub experts: usize,
    /// The scale of every `B_e A_e`: `alpha / r`, or `alpha / √r` with rsLoRA.
    pub scale: f64,
}

impl ExpertLora {
    /// The per-expert rank `r`.
    #[must_use]
    pub fn rank(&self) -> usize {
        let [rows, _] = self.a.shape().dims();
        rows / self.experts.max(1)
    }

    /// Expert `e`'s factors: `A_e: [r, in]`, `B_e: [out, r]`.
    #[must_use]
    pub fn expert_factors(&self, expert: usize) -> (Tensor<2>, Tensor<2>) {
        let rank = self.rank();
        let a = self.a.val().narrow(0, expert * rank, rank);
        let [out, _] = self.b.shape().dims();
        let b: Tensor<3> = self.b.val().reshape([out, rank, self.experts]);
        let b = b.narrow(2, expert, 1).reshape([out, rank]);
        (a, b)
    }

    /// Every expert's delta, `scale · B_e A_e`, `[E, out, in]`.
    #[must_use]
    pub fn delta(&self) -> Tensor<3> {
        let rank = self.rank();
        let [_, input] = self.a.shape().dims();
        let [out, _] = self.b.shape().dims();
        let a: Tensor<3> = self.a.val().reshape([self.experts, rank, input]);
        // [out, r, E] → [E, out, r]
        let b: Tensor<3> = self
            .b
            .val()
            .reshape([out, rank, self.experts])
            .permute([2, 0, 1]);
        b.matmul(a).mul_scalar(self.scale)
    }
}

/// `E` experts' linear maps in one weight `[E, out, in]`, with optional LoRA.
#[derive(Module, Debug)]
pub struct ExpertBank {
    /// The experts' weights, `[E, out, in]`.
    pub weight: Param<Tensor<3>>,
    /// The adapter, if one is attached.
    pub lora: Option<ExpertLora>,
}

impl ExpertBank {
    /// A bank of `weight: [E, out, in]` without an adapter.
    #[must_use]
    pub fn new(weight: Tensor<3>) -> Self {
        ExpertBank {
            weight: Param::from_tensor(weight),
            lora: None,
        }
    }

    /// The number of experts `E`.
    #[must_use]
    pub fn num_experts(&self) -> usize {
        self.weight.shape().dims::<3>()[0]
    }

    /// Each expert's output width.
    #[must_use]
    pub fn out_features(&self) -> usize {
        self.weight.shape().dims::<3>()[1]
    }

    /// Each expert's input width.
    #[must_use]
    pub fn in_features(&self) -> usize {
        self.weight.shape().dims::<3>()[2]
    }

    /// The weights' device.
    #[must_use]
    pub fn device(&self) -> Device {
        self.weight.lazy_device()
    }

    /// Expert `e` applied to `x: [n, in]` (the tokens routed to it): `x W_eᵀ`, plus
    /// `scale · (x A_eᵀ) B_eᵀ` when an adapter is attached.
    #[must_use]
    pub fn forward_expert(&self, expert: usize, x: Tensor<2>) -> Tensor<2> {
        let [_, out, input] = self.weight.shape().dims();
        let weight: Tensor<2> = self.weight.val().narrow(0, expert, 1).reshape([out, input]);
        let base = x.clone().matmul(weight.transpose());
        match &self.lora {
            Some(lora) => {
                let (a, b) = lora.expert_factors(expert);
                base + x
                    .matmul(a.transpose())
                    .matmul(b.transpose())
                    .mul_scalar(lora.scale)
            }
            None => base,
        }
    }

    /// The bank with its adapter folded into the weight, and no adapter.
    #[must_use]
    pub fn merge(self) -> Self {
        match self.lora {
            Some(lora) => {
                let delta = lora.delta();
                ExpertBank {
                    weight: self.weight.map(|weight| weight + delta),
                    lora: None,
                }
            }
            None => self,
        }
    }
}

crate::impls::leaf_layers! {
    ExpertBank => Kind::GroupedLinear;
}
