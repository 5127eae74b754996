//! Merging a PEFT adapter into a safetensors checkpoint on disk, shard by shard, without a
//! model: what PEFT's `merge_and_unload` (`peft/tuners/lora/layer.py`, `Linear.merge`,
//! `Embedding.merge`, `ParamWrapper.merge`) writes, for any architecture the tensor names
//! describe.
//!
//! The adapter is planned against the checkpoint's tree ([`checkpoint_layers`]) in
//! [`LoadMode::Merge`] by the loaders' rules, so a file the candle or burn loaders would refuse is
//! refused here, before anything is written. Then each shard is read whole, one at a time (memory:
//! one shard plus the adapter), and written to the output directory:
//! - a linear's `weight` `[out, in]` becomes `W + s·B A`; an embedding's `weight`
//!   `[num_embeddings, embedding_dim]` becomes `W + s·(B A)ᵀ`; a fused bank `[E, out, in]` gets
//!   `s·B_e A_e` on each expert `e` (`A_e` rows `e·r..e·r+r` of `A`, `B_e` columns `k·E + e` of
//!   `B`); `s` is `alpha / r` (`alpha / √r` with rsLoRA). The sum is computed in `f64` and
//!   rounded once to the weight's own dtype (`F16`, `BF16`, `F32`, `F64`). PEFT rounds the delta
//!   of a bank, an embedding or a router to a half-precision weight's dtype before adding it, so
//!   there a merged `F16` or `BF16` value can differ from PEFT's by one unit in the last place;
//!   `F32` and `F64` weights, and every linear, match;
//! - a parameter of a module saved whole (`modules_to_save`) replaces the checkpoint's, in the
//!   checkpoint's dtype;
//! - every other tensor keeps its bytes, and a shard with no change is copied as it is.
//!
//! An adapter of fused expert banks (transformers 5, `target_parameters`) against a checkpoint
//! that keeps its experts per expert (transformers 4's layout, as the Hub keeps Mixtral) is first
//! split per expert ([`Adapter::to_per_expert`], planned against the banks transformers 5 fuses
//! from the checkpoint), so each expert's `w1` / `w3` / `w2` gets its rows of the bank's delta:
//! what PEFT's merge of the fused model followed by `save_pretrained` writes.
//!
//! The index (if any) is written unchanged, since names, shards, dtypes and shapes do not change,
//! and the other files of the checkpoint's directory (`config.json`, tokenizer files) are copied.
//! Each file is written under a temporary name and renamed, so an interrupted merge leaves no
//! half-written shard under a shard's name; a merge that fails (a write error, a shard that does
//! not read back) removes the files it wrote, and the directories it made. A weight in
//! a dtype the merge cannot compute in is refused from its header, before anything is written.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::checkpoint::Checkpoint;
use crate::peft::adapter::{Adapter, RawTensor};
use crate::peft::checkpoint::{checkpoint_layers, experts_transposed, open_complete};
use crate::peft::error::PeftError;
use crate::peft::layer::{LayerShape, LoadMode};
use crate::peft::merge_files::{copy, copy_companions, io_error, same_directory, write};
use crate::peft::names::{DEFAULT_ADAPTER, FactorNaming};

/// `None` for `adapter` as it is, or, when it adapts fused expert banks (`target_parameters`) and `checkpoint` keeps
/// its experts per expert (transformers 4's layout, as the Hub keeps Mixtral), the same adapter
/// split per expert ([`Adapter::to_per_expert`], planned against the checkpoint's
/// [fused view](crate::peft::fused_view)): what PEFT merges into the fused model and
/// `save_pretrained` writes back per expert.
pub(crate) fn per_expert_if_needed(
    adapter: &Adapter,
    checkpoint: &Checkpoint,
) -> Result<Option<Adapter>, PeftError> {
    let banks = adapter
        .config
        .target_parameters
        .as_ref()
        .is_some_and(|parameters| !parameters.is_empty());
    if !banks {
        return Ok(None);
    }
    match crate::peft::fused_view::fused_view(checkpoint)? {
        Some((view, names)) => adapter
            .to_per_expert(&view, &checkpoint_layers(&view), names)
            .map(Some),
        None => Ok(None),
    }
}

/// What happens to one tensor of the checkpoint.
enum Change<'a> {
    /// `W + s·B A` (or its embedding and bank forms).
    Delta {
        /// The weight to add to, when the adapter carries its own copy; the checkpoint's
        /// otherwise.
        base: Option<&'a RawTensor>,
        shape: LayerShape,
        /// A bank stored `[experts, in, out]` (GPT-OSS), not `[experts, out, in]`.
        transposed: bool,
        naming: FactorNaming,
        scale: f64,
        a: &'a RawTensor,
        b: &'a RawTensor,
    },
    /// Replaced whole.
    Replace(&'a RawTensor),
}

/// One step of a merge, for a progress display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeStep {
    /// The shard's file name.
    pub shard: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// How many of its tensors changed (0: copied as it is).
    pub changed: usize,
    /// The size of all shards together, in bytes.
    pub total_bytes: u64,
}

/// What a merge wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeReport {
    /// The output directory.
    pub out: PathBuf,
    /// The layers whose weights changed, in walk order of the checkpoint's tree.
    pub layers: Vec<String>,
    /// Every shard, in order, with how many of its tensors changed.
    pub shards: Vec<MergeStep>,
}

/// Merges the PEFT adapter in `adapter` into the checkpoint at `checkpoint` (a directory, an
/// index or one `.safetensors` file; see [`Checkpoint::open`]) and writes the merged checkpoint to
/// the directory `out`, calling `progress` after each shard is written. See the
/// [module docs](self).
///
/// # Errors
///
/// [`PeftError::Checkpoint`] when the checkpoint cannot be read, a shard is absent, or it is a
/// GGUF file;
/// [`PeftError::Output`] when `out` is the checkpoint's own directory, a file, a directory that
/// is not empty, or cannot be written (a shard written in part is removed); every
/// error of [`Adapter::read`] and [`Adapter::plan`]; [`PeftError::Dtype`] for a weight that is not
/// a float.
pub fn merge(
    checkpoint: impl AsRef<Path>,
    adapter: impl AsRef<Path>,
    out: impl AsRef<Path>,
    mut progress: impl FnMut(&MergeStep),
) -> Result<MergeReport, PeftError> {
    let path = checkpoint.as_ref();
    let out = out.as_ref();
    let is_gguf = path
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("gguf"));
    if is_gguf {
        return Err(PeftError::Checkpoint {
            path: path.to_owned(),
            message: "a GGUF file: merge reads and writes safetensors checkpoints".to_owned(),
        });
    }
    let opened = open_complete(path)?;
    let adapter = Adapter::read(adapter)?;
    let adapter = per_expert_if_needed(&adapter, &opened)?.unwrap_or(adapter);
    let layers = checkpoint_layers(&opened);
    let transposed = experts_transposed(&opened);
    let plan = adapter.plan(&opened, &layers, LoadMode::Merge, DEFAULT_ADAPTER)?;
    // Whole parameters first: PEFT saves a copy of an adapted embedding's base weight
    // (`<path>.base_layer.weight`), which becomes the base its delta is added to.
    let mut replacements: HashMap<String, &RawTensor> = plan
        .parameters
        .iter()
        .map(|p| (format!("{}.{}", p.path, p.param), p.tensor))
        .collect();
    let mut changes: HashMap<String, Change<'_>> = HashMap::new();
    for factors in &plan.factors {
        let shape = layers
            .get(&factors.path)
            .map_or(LayerShape::Other, |layer| layer.shape);
        let name = match shape {
            LayerShape::Bank { .. } => factors.path.clone(),
            _ => format!("{}.weight", factors.path),
        };
        let base = replacements.remove(&name);
        changes.insert(
            name,
            Change::Delta {
                base,
                shape,
                transposed: transposed && matches!(shape, LayerShape::Bank { .. }),
                naming: factors.naming,
                scale: factors.scale,
                a: factors.a,
                b: factors.b,
            },
        );
    }
    for (name, tensor) in replacements {
        changes.insert(name, Change::Replace(tensor));
    }
    let source_dir = opened
        .files()
        .first()
        .and_then(|file| file.parent())
        .unwrap_or_else(|| Path::new(""))
        .to_owned();
    let refuse = |problem: &str| PeftError::Output {
        dir: out.to_owned(),
        problem: problem.to_owned(),
    };
    if same_directory(&source_dir, out) {
        return Err(refuse(
            "it is the checkpoint's own directory, and merging never overwrites its input",
        ));
    }
    if out.is_file() {
        return Err(refuse("it is a file, not a directory"));
    }
    if out.exists() && !out.is_dir() {
        return Err(refuse("it is not a directory"));
    }
    if fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(refuse(
            "it is not empty, and a merged checkpoint beside other files may be loaded wrongly",
        ));
    }
    // A weight the merge cannot compute in is refused now, from its header, rather than when its
    // shard comes to be rewritten.
    for tensor in opened.tensors() {
        if let (true, Some(dtype)) = (changes.contains_key(&tensor.name), tensor.dtype())
            && !matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
        {
            return Err(PeftError::Dtype {
                key: tensor.name.clone(),
                dtype: format!("{dtype:?}"),
            });
        }
    }
    // The directories the merge makes (`out` and any missing parents), innermost first: removed
    // again if it fails.
    let created: Vec<&Path> = out.ancestors().take_while(|dir| !dir.exists()).collect();
    fs::create_dir_all(out).map_err(|error| refuse(&error.to_string()))?;
    let mut written: Vec<PathBuf> = Vec::new();
    let result = write_output(
        &opened,
        &changes,
        &source_dir,
        out,
        &mut written,
        &mut progress,
    );
    match result {
        Ok(shards) => Ok(MergeReport {
            out: out.to_owned(),
            layers: plan.factors.iter().map(|f| f.path.clone()).collect(),
            shards,
        }),
        Err(error) => {
            // What was written is removed, and the directory if the merge made it: a failed merge
            // leaves no partial checkpoint to be loaded by mistake.
            for file in &written {
                let _ = fs::remove_file(file);
            }
            for dir in created {
                let _ = fs::remove_dir(dir);
            }
            Err(error)
        }
    }
}

/// Writes every shard (rewritten or copied) and the companion files into `out`, recording each
/// file in `written` once it is there.
fn write_output(
    opened: &Checkpoint,
    changes: &HashMap<String, Change<'_>>,
    source_dir: &Path,
    out: &Path,
    written: &mut Vec<PathBuf>,
    progress: &mut impl FnMut(&MergeStep),
) -> Result<Vec<MergeStep>, PeftError> {
    let mut shards = Vec::new();
    let total_bytes = opened
        .files()
        .iter()
        .map(|file| fs::metadata(file).map_or(0, |meta| meta.len()))
        .sum();
    // How many changed tensors each shard holds, counted in one pass over the tensors.
    let mut changed: HashMap<&Path, usize> = HashMap::new();
    for tensor in opened.tensors() {
        if let Some(shard) = tensor.shard.and_then(|shard| opened.shards().get(shard))
            && changes.contains_key(&tensor.name)
        {
            *changed.entry(shard.path.as_path()).or_default() += 1;
        }
    }
    let mut files: Vec<&PathBuf> = opened.files().iter().collect();
    files.sort();
    for file in files {
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        let target = out.join(&name);
        let step = MergeStep {
            shard: name,
            bytes: fs::metadata(file).map_or(0, |meta| meta.len()),
            changed: changed.get(file.as_path()).copied().unwrap_or(0),
            total_bytes,
        };
        if step.changed == 0 {
            copy(file, &target)?;
        } else {
            rewrite_shard(file, &target, changes)?;
        }
        written.push(target);
        progress(&step);
        shards.push(step);
    }
    copy_companions(source_dir, out, opened, written)?;
    Ok(shards)
}

/// One shard read whole, its changed tensors recomputed, the others' bytes kept.
fn rewrite_shard(
    from: &Path,
    to: &Path,
    changes: &HashMap<String, Change<'_>>,
) -> Result<(), PeftError> {
    let bytes = fs::read(from).map_err(io_error(from))?;
    let invalid = |message: String| PeftError::Safetensors {
        file: from.to_owned(),
        message,
    };
    let (_, metadata) =
        SafeTensors::read_metadata(&bytes).map_err(|error| invalid(error.to_string()))?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|error| invalid(error.to_string()))?;
    // Untouched tensors are written from the shard's own bytes, never copied.
    let mut written: BTreeMap<String, Written<'_>> = BTreeMap::new();
    for (name, view) in tensors.tensors() {
        let tensor = match changes.get(&name) {
            None => Written::Kept(view),
            Some(change) => {
                let weight =
                    RawTensor::new(view.dtype(), view.shape().to_vec(), view.data().to_vec());
                Written::Changed(match change {
                    Change::Replace(replacement) => convert(replacement, weight.dtype, &name)?,
                    Change::Delta {
                        base,
                        shape,
                        transposed,
                        naming,
                        scale,
                        a,
                        b,
                    } => {
                        let weight = match base {
                            Some(copy) => convert(copy, weight.dtype, &name)?,
                            None => weight,
                        };
                        let layout = Layout {
                            shape: *shape,
                            transposed: *transposed,
                            naming: *naming,
                        };
                        apply_delta(&weight, layout, *scale, a, b, &name)?
                    }
                })
            }
        };
        written.insert(name, tensor);
    }
    let metadata = metadata.metadata().clone();
    let serialized = safetensors::tensor::serialize(
        written.iter().map(|(name, tensor)| (name.as_str(), tensor)),
        metadata,
    )
    .map_err(|error| invalid(error.to_string()))?;
    write(to, &serialized)
}

/// A tensor of a rewritten shard: the shard's own bytes, or new ones.
enum Written<'a> {
    Kept(safetensors::tensor::TensorView<'a>),
    Changed(RawTensor),
}

impl safetensors::View for &Written<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Written::Kept(view) => view.dtype(),
            Written::Changed(tensor) => tensor.dtype,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Written::Kept(view) => view.shape(),
            Written::Changed(tensor) => &tensor.shape,
        }
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Written::Kept(view) => std::borrow::Cow::Borrowed(view.data()),
            Written::Changed(tensor) => std::borrow::Cow::Borrowed(tensor.data()),
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Written::Kept(view) => view.data().len(),
            Written::Changed(tensor) => tensor.data().len(),
        }
    }
}

/// `tensor`'s values in `dtype`.
fn convert(tensor: &RawTensor, dtype: Dtype, name: &str) -> Result<RawTensor, PeftError> {
    let values = tensor.to_f64_values(name)?;
    encode(&values, dtype, tensor.shape.clone(), name)
}

/// How a weight and its factors are laid out.
#[derive(Clone, Copy)]
struct Layout {
    shape: LayerShape,
    /// A bank stored `[experts, in, out]`: each expert's delta is added transposed.
    transposed: bool,
    naming: FactorNaming,
}

/// `W + s·ΔW` for one weight, in the weight's dtype.
fn apply_delta(
    weight: &RawTensor,
    Layout {
        shape,
        transposed,
        naming,
    }: Layout,
    scale: f64,
    a: &RawTensor,
    b: &RawTensor,
    name: &str,
) -> Result<RawTensor, PeftError> {
    let mut values = weight.to_f64_values(name)?;
    let a_values = a.to_f64_values(name)?;
    let b_values = b.to_f64_values(name)?;
    let (experts, rows, cols) = match shape {
        LayerShape::Linear {
            in_features,
            out_features,
            ..
        } => (1, out_features, in_features),
        LayerShape::Embedding {
            num_embeddings,
            embedding_dim,
        } => (1, num_embeddings, embedding_dim),
        LayerShape::Bank {
            experts,
            in_features,
            out_features,
        } => (experts, out_features, in_features),
        LayerShape::Other => {
            return Err(PeftError::Tensor {
                path: name.to_owned(),
                message: "the layer's shape is unknown".to_owned(),
            });
        }
    };
    let rank = a.shape.first().copied().unwrap_or(0) / experts.max(1);
    if values.len() != experts * rows * cols {
        return Err(PeftError::Tensor {
            path: name.to_owned(),
            message: format!(
                "the weight holds {} values, not {experts}·{rows}·{cols}",
                values.len()
            ),
        });
    }
    let mut product = vec![0.0_f64; rows * cols];
    for expert in 0..experts {
        product.fill(0.0);
        for k in 0..rank {
            match naming {
                // ΔW[n][d] = Σ_k B[d][k] A[k][n]: the embedding's delta is (B A)ᵀ.
                FactorNaming::Embedding => {
                    for n in 0..rows {
                        let a_kn = a_values[k * rows + n];
                        for d in 0..cols {
                            product[n * cols + d] += b_values[d * rank + k] * a_kn;
                        }
                    }
                }
                // ΔW_e[o][i] = Σ_k B[o][k·E + e] A[e·r + k][i].
                FactorNaming::Linear => {
                    let a_row = &a_values[(expert * rank + k) * cols..][..cols];
                    for o in 0..rows {
                        let b_ok = b_values[o * rank * experts + k * experts + expert];
                        for (slot, a_ki) in product[o * cols..][..cols].iter_mut().zip(a_row) {
                            *slot += b_ok * a_ki;
                        }
                    }
                }
            }
        }
        let stored = &mut values[expert * rows * cols..][..rows * cols];
        if transposed {
            // Stored `[in][out]`: ΔW_e[o][i] goes to [i][o].
            for (o, row) in product.chunks_exact(cols).enumerate() {
                for (i, delta) in row.iter().enumerate() {
                    stored[i * rows + o] += scale * delta;
                }
            }
        } else {
            for (value, delta) in stored.iter_mut().zip(&product) {
                *value += scale * delta;
            }
        }
    }
    encode(&values, weight.dtype, weight.shape.clone(), name)
}

/// `values` stored as `dtype`.
fn encode(
    values: &[f64],
    dtype: Dtype,
    shape: Vec<usize>,
    name: &str,
) -> Result<RawTensor, PeftError> {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a weight is stored in its own dtype, as PEFT's merge stores it"
    )]
    let data: Vec<u8> = match dtype {
        Dtype::F64 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F32 => values
            .iter()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f64(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f64(*v).to_le_bytes())
            .collect(),
        other => {
            return Err(PeftError::Dtype {
                key: name.to_owned(),
                dtype: format!("{other:?}"),
            });
        }
    };
    Ok(RawTensor::new(dtype, shape, data))
}
