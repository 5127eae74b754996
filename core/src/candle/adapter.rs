//! One low-rank adapter of candle tensors, as PEFT's `LoraLayer` holds one: the factors `A` and
//! `B`, the alpha, rsLoRA and dropout, and the scale and delta they give (the scale is
//! [`crate::peft::scale`], the one formula both frameworks use).

use candle_core::Tensor;

use crate::candle::error::LoraError;

/// One low-rank adapter: the pair `A`, `B` and its scale.
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    pub(crate) a: Tensor,
    pub(crate) b: Tensor,
    pub(crate) alpha: f64,
    pub(crate) rslora: bool,
    pub(crate) dropout: f32,
}

impl LoraAdapter {
    /// An adapter from `a: [r, in]` and `b: [out, r]` (for an embedding,
    /// `a: [r, num_embeddings]`, `b: [embedding_dim, r]`).
    ///
    /// # Errors
    ///
    /// [`LoraError::Shape`] when `a` or `b` is not a matrix or their ranks differ;
    /// [`LoraError::Settings`] when the rank is zero or `alpha` is not finite (zero and negative
    /// alphas are allowed, as in PEFT).
    pub fn new(a: Tensor, b: Tensor, alpha: f64, rslora: bool) -> Result<Self, LoraError> {
        let rank = match a.dims() {
            [rank, _] => *rank,
            dims => return Err(shape_error("A", &[0, 0], dims, "[r, in_features]")),
        };
        match b.dims() {
            [_, b_rank] if *b_rank == rank => {}
            dims => {
                let out = dims.first().copied().unwrap_or(0);
                return Err(shape_error("B", &[out, rank], dims, "[out_features, r]"));
            }
        }
        check_settings(rank, alpha)?;
        Ok(LoraAdapter {
            a,
            b,
            alpha,
            rslora,
            dropout: 0.0,
        })
    }

    /// The same adapter with dropout `p` on its input while training.
    #[must_use]
    pub fn with_dropout(self, p: f32) -> Self {
        LoraAdapter { dropout: p, ..self }
    }

    /// `A`, `[r, in]`.
    #[must_use]
    pub fn a(&self) -> &Tensor {
        &self.a
    }

    /// `B`, `[out, r]`.
    #[must_use]
    pub fn b(&self) -> &Tensor {
        &self.b
    }

    /// The rank `r`.
    #[must_use]
    pub fn rank(&self) -> usize {
        self.a.dim(0).unwrap_or(0)
    }

    /// The alpha.
    #[must_use]
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Whether the scale is `alpha / sqrt(r)` (rsLoRA) rather than `alpha / r`.
    #[must_use]
    pub fn is_rslora(&self) -> bool {
        self.rslora
    }

    /// The dropout probability applied to the input while training.
    #[must_use]
    pub fn dropout(&self) -> f32 {
        self.dropout
    }

    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    #[must_use]
    pub fn scale(&self) -> f64 {
        crate::peft::scale(
            u32::try_from(self.rank()).unwrap_or(u32::MAX),
            self.alpha,
            self.rslora,
        )
    }

    /// `scale · B · A`, `[out, in]`: what merging adds to a linear weight.
    ///
    /// # Errors
    ///
    /// When the tensor operations fail (mismatched devices).
    pub fn delta_weight(&self) -> candle_core::Result<Tensor> {
        self.b.matmul(&self.a)?.affine(self.scale(), 0.0)
    }

    pub(crate) fn input(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if train && self.dropout > 0.0 {
            candle_nn::ops::dropout(x, self.dropout)
        } else {
            Ok(x.clone())
        }
    }
}

/// Refuses a zero rank or an alpha that is not finite.
pub(crate) fn check_settings(rank: usize, alpha: f64) -> Result<(), LoraError> {
    if rank == 0 || !alpha.is_finite() {
        return Err(LoraError::Settings {
            path: String::new(),
            rank,
            alpha,
        });
    }
    Ok(())
}

pub(crate) fn shape_error(
    name: &str,
    expected: &[usize],
    found: &[usize],
    axes: &'static str,
) -> LoraError {
    LoraError::Shape {
        name: name.to_owned(),
        path: String::new(),
        expected: expected.to_vec(),
        found: found.to_vec(),
        axes,
    }
}

/// Checks that `A` is `[r, input]` and `B` is `[output, r]`; each pair names the axes for errors.
pub(crate) fn check_factors(
    adapter: &LoraAdapter,
    (input, a_axes): (usize, &'static str),
    (output, b_axes): (usize, &'static str),
) -> Result<(), LoraError> {
    let rank = adapter.rank();
    if adapter.a.dims() != [rank, input] {
        return Err(shape_error("A", &[rank, input], adapter.a.dims(), a_axes));
    }
    if adapter.b.dims() != [output, rank] {
        return Err(shape_error("B", &[output, rank], adapter.b.dims(), b_axes));
    }
    Ok(())
}

/// `x · wᵀ` over the last axis of `x`, whatever its leading axes.
///
/// # Errors
///
/// A scalar `x` (no axis to project), and candle's error when the last axis of `x` is not the
/// width of `w`.
pub(crate) fn project(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    match x.dims() {
        [] => Err(candle_core::Error::Msg(format!(
            "expected an input with its features on the last axis, [..., {}]; got a scalar",
            w.dim(1)?
        ))),
        [_] | [_, _] => x.matmul(&w.t()?),
        [leading @ .., features] => {
            let rows = x.elem_count() / (*features).max(1);
            let mut out_dims = leading.to_vec();
            out_dims.push(w.dim(0)?);
            x.reshape((rows, *features))?
                .matmul(&w.t()?)?
                .reshape(out_dims)
        }
    }
}
