//! Per-expert and fused LoRA factors of routed experts, converted exactly, both ways.
//!
//! transformers 4 keeps each routed expert's projections as separate linears
//! (`experts.K.gate_proj/up_proj/down_proj`, Mixtral's `experts.K.w1/w3/w2`), so a PEFT adapter
//! trained on it holds one pair per expert and projection: `A_e: [r_e, in]`, `B_e: [out, r_e]`,
//! scaled by `s_e`. transformers 5 fuses them (`gate_up_proj [E, 2I, H]`, `down_proj [E, H, I]`)
//! and PEFT adapts the fused parameter as a `ParamWrapper`: one rank `r` and one scale `s` for
//! all experts, `A: [E·r, in]` expert-major, `B: [out, r·E]` rank-major (see
//! `ExpertBank` in `moduletree::candle` or `moduletree::burn` for the layout).
//!
//! [`fuse`] builds the fused pair from per-expert pairs: `r` is the largest `r_e` (smaller ones
//! are padded with zero rows of `A_e` and zero columns of `B_e`) and each expert's own scale is
//! folded into its `B_e` as `s_e / s`, so `s · B'_e A'_e = s_e · B_e A_e` exactly, whatever the
//! ranks, alphas and rsLoRA settings. Stacking several projections of one expert on the output
//! axis (gate above up for `gate_up_proj`) stacks their `A`s and puts their `B`s block-diagonally,
//! so the fused rank is the sum of theirs. [`split`] goes back: expert `e`'s `A_e` is rows
//! `e·r .. e·r + r` of `A`, and a projection's `B_e` is its rows of the columns `k·E + e`; every
//! projection of an expert gets the fused rank `r` and the fused scale.
//!
//! PEFT 0.21's own conversion (`peft/utils/transformers_weight_conversion.py`) doubles `lora_alpha`
//! with the doubled rank of `gate_up_proj`, which keeps `alpha / r` but not rsLoRA's
//! `alpha / √r` (gate and up then get `√2` times their scale), and covers a fixed table of
//! architectures; here any per-expert adapter converts exactly.

/// A row-major matrix of `f32`.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows · cols` values, row-major.
    pub values: Vec<f32>,
}

impl Matrix {
    /// A `rows × cols` matrix of zeros.
    #[must_use]
    pub fn zeros(rows: usize, cols: usize) -> Matrix {
        Matrix {
            rows,
            cols,
            values: vec![0.0; rows * cols],
        }
    }

    /// Whether `values` holds exactly `rows · cols` values.
    #[must_use]
    pub fn is_whole(&self) -> bool {
        self.rows.checked_mul(self.cols) == Some(self.values.len())
    }

    fn at(&self, row: usize, col: usize) -> f32 {
        self.values[row * self.cols + col]
    }

    fn set(&mut self, row: usize, col: usize, value: f32) {
        self.values[row * self.cols + col] = value;
    }
}

/// One expert's LoRA on one projection: `A: [r, in]`, `B: [out, r]`, and its scale.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpertFactors {
    /// `A`, `[r, in]`.
    pub a: Matrix,
    /// `B`, `[out, r]`.
    pub b: Matrix,
    /// The scale of `B A` (`alpha / r` or `alpha / √r`).
    pub scale: f64,
}

/// A fused bank's LoRA: `A: [E·r, in]` expert-major, `B: [out, r·E]` rank-major, one scale.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedFactors {
    /// The number of experts `E`.
    pub experts: usize,
    /// The per-expert rank `r`.
    pub rank: usize,
    /// `A`, `[E·r, in]`.
    pub a: Matrix,
    /// `B`, `[out, r·E]`.
    pub b: Matrix,
    /// The scale of every `B_e A_e`.
    pub scale: f64,
}

/// Why per-expert factors cannot be fused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FuseError {
    /// No expert, an expert with no projection, or experts with different numbers of
    /// projections.
    #[error("nothing to fuse: every expert needs factors for the same projections, at least one")]
    Empty,
    /// Experts disagree on a projection's widths.
    #[error(
        "expert {expert}, projection {projection}: factors [{a_rows}, {a_cols}] / [{b_rows}, {b_cols}] do not fit the first expert's widths (in {input}, out {output})"
    )]
    Widths {
        /// The expert.
        expert: usize,
        /// The projection's position in the stack.
        projection: usize,
        /// A's rows.
        a_rows: usize,
        /// A's columns.
        a_cols: usize,
        /// B's rows.
        b_rows: usize,
        /// B's columns.
        b_cols: usize,
        /// The input width expected.
        input: usize,
        /// The output width expected.
        output: usize,
    },
    /// A matrix whose values are not `rows · cols` long.
    #[error("a {rows}×{cols} matrix holds {len} values")]
    Values {
        /// The rows it claims.
        rows: usize,
        /// The columns it claims.
        cols: usize,
        /// The values it holds.
        len: usize,
    },
    /// The fused factors would hold more values than memory can address.
    #[error("the fused factors would hold more values than memory can address")]
    TooLarge,
    /// A scale that is not finite, or a fused scale of zero.
    #[error("expert {expert}: a scale of {scale} cannot be folded into a fused adapter")]
    Scale {
        /// The expert.
        expert: usize,
        /// The scale.
        scale: f64,
    },
}

/// Fuses per-expert factors: `experts[e][p]` is expert `e`'s factors on projection `p`, the
/// projections stacked on the output axis in that order (one projection for `down_proj`; gate
/// then up for `gate_up_proj`). The result's scale is `scale` (the fused adapter's `alpha / r`),
/// each expert's own scale folded into its `B`. See the [module docs](self).
///
/// # Errors
///
/// [`FuseError`] when there is nothing to fuse, a matrix is not whole, widths disagree, or a
/// scale is not finite (or `scale` is zero).
pub fn fuse(experts: &[Vec<ExpertFactors>], scale: f64) -> Result<FusedFactors, FuseError> {
    let first = experts
        .first()
        .filter(|first| !first.is_empty())
        .ok_or(FuseError::Empty)?;
    let input = first[0].a.cols;
    let outputs: Vec<usize> = first.iter().map(|factors| factors.b.rows).collect();
    let output = outputs
        .iter()
        .try_fold(0_usize, |sum, &rows| sum.checked_add(rows))
        .ok_or(FuseError::TooLarge)?;
    if !scale.is_finite() || scale == 0.0 {
        return Err(FuseError::Scale { expert: 0, scale });
    }
    // The fused rank: the largest sum of the projections' ranks over the experts.
    let mut rank = 0;
    for (expert, projections) in experts.iter().enumerate() {
        if projections.len() != outputs.len() {
            return Err(FuseError::Empty);
        }
        let mut sum = 0;
        for (projection, factors) in projections.iter().enumerate() {
            let (a, b) = (&factors.a, &factors.b);
            if let Some(error) = not_whole(a).or_else(|| not_whole(b)) {
                return Err(error);
            }
            if a.cols != input || b.rows != outputs[projection] || b.cols != a.rows {
                return Err(FuseError::Widths {
                    expert,
                    projection,
                    a_rows: a.rows,
                    a_cols: a.cols,
                    b_rows: b.rows,
                    b_cols: b.cols,
                    input,
                    output: outputs[projection],
                });
            }
            if !factors.scale.is_finite() {
                return Err(FuseError::Scale {
                    expert,
                    scale: factors.scale,
                });
            }
            sum = a.rows.checked_add(sum).ok_or(FuseError::TooLarge)?;
        }
        rank = rank.max(sum);
    }
    let count = experts.len();
    let width = count.checked_mul(rank).ok_or(FuseError::TooLarge)?;
    if width.checked_mul(input.max(output)).is_none() {
        return Err(FuseError::TooLarge);
    }
    let mut a = Matrix::zeros(width, input);
    let mut b = Matrix::zeros(output, width);
    for (expert, projections) in experts.iter().enumerate() {
        let (mut k0, mut row0) = (0, 0);
        for factors in projections {
            #[expect(
                clippy::cast_possible_truncation,
                reason = "a ratio of f32-sized scales"
            )]
            let ratio = (factors.scale / scale) as f32;
            for k in 0..factors.a.rows {
                for i in 0..input {
                    a.set(expert * rank + k0 + k, i, factors.a.at(k, i));
                }
                for o in 0..factors.b.rows {
                    b.set(
                        row0 + o,
                        (k0 + k) * count + expert,
                        factors.b.at(o, k) * ratio,
                    );
                }
            }
            k0 += factors.a.rows;
            row0 += factors.b.rows;
        }
    }
    Ok(FusedFactors {
        experts: count,
        rank,
        a,
        b,
        scale,
    })
}

/// Splits fused factors into per-expert ones: `outputs` are the projections' output widths,
/// stacked in that order (they must sum to `B`'s rows). Every projection of expert `e` gets
/// `A_e` whole, its rows of `B_e`, the fused rank and the fused scale: exact, since
/// `B_e A_e` restricted to a projection's rows is that projection's delta.
///
/// # Errors
///
/// [`FuseError::Values`] when a matrix is not whole; [`FuseError::Widths`] when `outputs` do
/// not sum to `B`'s rows or `A` and `B` disagree with `experts` and `rank`.
pub fn split(
    fused: &FusedFactors,
    outputs: &[usize],
) -> Result<Vec<Vec<ExpertFactors>>, FuseError> {
    let (count, rank) = (fused.experts, fused.rank);
    let input = fused.a.cols;
    if let Some(error) = not_whole(&fused.a).or_else(|| not_whole(&fused.b)) {
        return Err(error);
    }
    let output = outputs
        .iter()
        .try_fold(0_usize, |sum, &rows| sum.checked_add(rows));
    let width = count.checked_mul(rank);
    if width != Some(fused.a.rows) || width != Some(fused.b.cols) || output != Some(fused.b.rows) {
        let output = output.unwrap_or(usize::MAX);
        return Err(FuseError::Widths {
            expert: 0,
            projection: 0,
            a_rows: fused.a.rows,
            a_cols: fused.a.cols,
            b_rows: fused.b.rows,
            b_cols: fused.b.cols,
            input,
            output,
        });
    }
    Ok((0..count)
        .map(|expert| {
            let mut a = Matrix::zeros(rank, input);
            for k in 0..rank {
                for i in 0..input {
                    a.set(k, i, fused.a.at(expert * rank + k, i));
                }
            }
            let mut row0 = 0;
            outputs
                .iter()
                .map(|&rows| {
                    let mut b = Matrix::zeros(rows, rank);
                    for o in 0..rows {
                        for k in 0..rank {
                            b.set(o, k, fused.b.at(row0 + o, k * count + expert));
                        }
                    }
                    row0 += rows;
                    ExpertFactors {
                        a: a.clone(),
                        b,
                        scale: fused.scale,
                    }
                })
                .collect()
        })
        .collect())
}

/// [`FuseError::Values`] for a matrix that is not whole.
fn not_whole(matrix: &Matrix) -> Option<FuseError> {
    (!matrix.is_whole()).then_some(FuseError::Values {
        rows: matrix.rows,
        cols: matrix.cols,
        len: matrix.values.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: f32) -> Matrix {
        Matrix {
            rows,
            cols,
            values: (0..rows * cols)
                .map(|i| ((i as f32).mul_add(0.61, seed)).sin())
                .collect(),
        }
    }

    /// `scale · B A` as a dense `[out, in]` matrix.
    fn delta(factors: &ExpertFactors) -> Vec<f32> {
        let (out, inp, rank) = (factors.b.rows, factors.a.cols, factors.a.rows);
        let mut delta = vec![0.0_f64; out * inp];
        for o in 0..out {
            for i in 0..inp {
                for k in 0..rank {
                    delta[o * inp + i] +=
                        f64::from(factors.b.at(o, k)) * f64::from(factors.a.at(k, i));
                }
            }
        }
        #[expect(clippy::cast_possible_truncation, reason = "compared at f32 precision")]
        delta.iter().map(|d| (d * factors.scale) as f32).collect()
    }

    /// Expert `e`'s fused delta rows for `rows` starting at `row0`.
    fn fused_delta(fused: &FusedFactors, expert: usize, row0: usize, rows: usize) -> Vec<f32> {
        let per = split(fused, &[fused.b.rows]).unwrap();
        let whole = delta(&per[expert][0]);
        let inp = fused.a.cols;
        whole[row0 * inp..(row0 + rows) * inp].to_vec()
    }

    #[test]
    fn fusing_gate_and_up_with_ranks_alphas_and_rslora_is_exact() {
        // Three experts; gate and up per expert with their own ranks and scales (rsLoRA and
        // rank patterns give every pair another scale).
        let (hidden, inter) = (6, 4);
        let ranks = [(2, 3), (1, 1), (4, 2)];
        let experts: Vec<Vec<ExpertFactors>> = ranks
            .iter()
            .enumerate()
            .map(|(e, &(r_gate, r_up))| {
                let seed = e as f32;
                vec![
                    ExpertFactors {
                        a: matrix(r_gate, hidden, seed),
                        b: matrix(inter, r_gate, seed + 0.5),
                        scale: 16.0 / (r_gate as f64).sqrt(),
                    },
                    ExpertFactors {
                        a: matrix(r_up, hidden, seed + 1.0),
                        b: matrix(inter, r_up, seed + 1.5),
                        scale: 8.0 / r_up as f64,
                    },
                ]
            })
            .collect();
        let fused = fuse(&experts, 2.0).unwrap();
        assert_eq!(fused.rank, 6, "the largest summed rank (4 + 2)");
        assert_eq!(
            (fused.a.rows, fused.b.cols, fused.b.rows),
            (18, 18, 2 * inter)
        );
        for (e, projections) in experts.iter().enumerate() {
            for (p, factors) in projections.iter().enumerate() {
                let expected = delta(factors);
                let found = fused_delta(&fused, e, p * inter, inter);
                for (x, y) in expected.iter().zip(&found) {
                    assert!(
                        (x - y).abs() < 1e-4,
                        "expert {e} projection {p}: {x} vs {y}"
                    );
                }
            }
        }
        // And back: each projection's delta is the same again.
        let back = split(&fused, &[inter, inter]).unwrap();
        for (e, projections) in experts.iter().enumerate() {
            for (p, factors) in projections.iter().enumerate() {
                for (x, y) in delta(factors).iter().zip(delta(&back[e][p])) {
                    assert!((x - y).abs() < 1e-4, "split expert {e} projection {p}");
                }
            }
        }
    }

    #[test]
    fn one_projection_of_equal_ranks_keeps_its_factors() {
        let experts: Vec<Vec<ExpertFactors>> = (0..2)
            .map(|e| {
                vec![ExpertFactors {
                    a: matrix(2, 3, e as f32),
                    b: matrix(5, 2, e as f32 + 0.3),
                    scale: 4.0,
                }]
            })
            .collect();
        let fused = fuse(&experts, 4.0).unwrap();
        let back = split(&fused, &[5]).unwrap();
        assert_eq!(back, experts);
    }

    #[test]
    fn mismatched_widths_are_refused() {
        let good = ExpertFactors {
            a: matrix(2, 3, 0.0),
            b: matrix(5, 2, 0.0),
            scale: 1.0,
        };
        let wide = ExpertFactors {
            a: matrix(2, 4, 0.0),
            ..good.clone()
        };
        assert!(matches!(
            fuse(&[vec![good.clone()], vec![wide]], 1.0),
            Err(FuseError::Widths { expert: 1, .. })
        ));
        assert_eq!(fuse(&[], 1.0), Err(FuseError::Empty));
        assert!(matches!(
            fuse(&[vec![good]], 0.0),
            Err(FuseError::Scale { .. })
        ));
    }

    #[test]
    fn matrices_that_are_not_whole_are_refused() {
        let mut short = matrix(2, 3, 0.0);
        short.values.pop();
        let factors = ExpertFactors {
            a: short.clone(),
            b: matrix(4, 2, 1.0),
            scale: 1.0,
        };
        assert_eq!(
            fuse(&[vec![factors]], 1.0),
            Err(FuseError::Values {
                rows: 2,
                cols: 3,
                len: 5
            })
        );
        let fused = FusedFactors {
            experts: 1,
            rank: 2,
            a: short,
            b: matrix(4, 2, 1.0),
            scale: 1.0,
        };
        assert!(matches!(
            split(&fused, &[4]),
            Err(FuseError::Values { len: 5, .. })
        ));
    }
}
