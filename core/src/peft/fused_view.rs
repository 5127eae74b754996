//! A per-expert checkpoint seen with transformers 5's fused expert banks, so that an adapter
//! trained on the fused layout (PEFT's `target_parameters` on `mlp.experts.gate_up_proj`) can be
//! planned against it and split into per-expert factors ([`Adapter::to_per_expert`]) before a
//! merge.
//!
//! transformers 5 loads a per-expert checkpoint (`model.layers.L.block_sparse_moe.experts.K.w1`,
//! or `mlp.experts.K.gate_proj`) by fusing each block's experts into `mlp.experts.gate_up_proj`
//! `[E, 2I, H]` (each expert's gate rows, then its up rows) and `mlp.experts.down_proj`
//! `[E, H, I]` (`transformers/conversion_mapping.py`); PEFT adapts and merges those banks, and
//! `save_pretrained` writes them back per expert. [`fused_view`] builds the same banks from the
//! headers alone (names, dtypes and shapes; no data), with the rest of Mixtral's
//! `block_sparse_moe` under `mlp` as transformers 5 names it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint::{Checkpoint, CheckpointTensor, TensorLayout};
use crate::peft::error::PeftError;
use crate::peft::per_expert::PerExpertNames;

/// One block's per-expert projections: each expert's gate, up and down layouts (`None` when
/// their shard's header was not read).
type Experts<'n> = BTreeMap<(usize, &'n str), Option<TensorLayout>>;

/// `checkpoint` with each block's per-expert projections fused into transformers 5's banks, and
/// the per-expert names it uses; `None` when it holds no per-expert projections (it is fused
/// already, or has no experts). A bank whose projections' shard is absent has no layout.
///
/// # Errors
///
/// [`PeftError::Checkpoint`] naming the block, the expert and the projection when a block's
/// experts cannot be fused: one lacks a projection the others have, or the shapes differ, or one
/// is not a matrix.
pub(crate) fn fused_view(
    checkpoint: &Checkpoint,
) -> Result<Option<(Checkpoint, PerExpertNames)>, PeftError> {
    fuse(checkpoint).map_err(|message| PeftError::Checkpoint {
        path: checkpoint.index().map_or_else(
            || checkpoint.files().first().cloned().unwrap_or_default(),
            Path::to_owned,
        ),
        message,
    })
}

fn fuse(checkpoint: &Checkpoint) -> Result<Option<(Checkpoint, PerExpertNames)>, String> {
    let tensors = checkpoint.tensors();
    let names = if tensors
        .iter()
        .any(|tensor| tensor.name.contains(".block_sparse_moe.experts."))
    {
        PerExpertNames::MIXTRAL
    } else {
        PerExpertNames::GATE_UP_DOWN
    };
    let block = names.block.unwrap_or("mlp");
    let marker = format!(".{block}.experts.");
    let mut blocks: BTreeMap<&str, Experts<'_>> = BTreeMap::new();
    let mut kept: Vec<CheckpointTensor> = Vec::with_capacity(tensors.len());
    for tensor in tensors {
        if let Some((prefix, expert, projection)) = per_expert(&tensor.name, &marker, names) {
            blocks
                .entry(prefix)
                .or_default()
                .insert((expert, projection), tensor.layout.clone());
            continue;
        }
        let mut tensor = tensor.clone();
        if let Some(mixtral) = names.block {
            tensor.name = tensor.name.replace(&format!(".{mixtral}."), ".mlp.");
        }
        kept.push(tensor);
    }
    if blocks.is_empty() {
        return Ok(None);
    }
    for (prefix, experts) in &blocks {
        let count = experts
            .keys()
            .map(|(expert, _)| expert + 1)
            .max()
            .unwrap_or(0);
        let at = |expert: usize, projection: &str| -> Result<Option<[u64; 2]>, String> {
            let name = format!("{prefix}.{block}.experts.{expert}.{projection}.weight");
            let layout = experts.get(&(expert, projection)).ok_or_else(|| {
                format!(
                    "expert {expert} of the {count} in `{prefix}.{block}` has no `{projection}` \
                     (`{name}`): an adapter of fused expert banks needs every expert's projections"
                )
            })?;
            layout
                .as_ref()
                .map(|layout| {
                    <[u64; 2]>::try_from(layout.shape.as_slice())
                        .map_err(|_| format!("`{name}` is not a matrix: {:?}", layout.shape))
                })
                .transpose()
        };
        let projections = [names.gate, names.up, names.down];
        for projection in projections {
            let first = at(0, projection)?;
            for expert in 1..count {
                let shape = at(expert, projection)?;
                if first.is_some() && shape.is_some() && shape != first {
                    return Err(format!(
                        "expert {expert}'s `{projection}` in `{prefix}.{block}` is {shape:?}, expert 0's {first:?}: experts of different shapes cannot be fused"
                    ));
                }
            }
        }
        let dtype = |projection: &str| {
            experts
                .get(&(0, projection))
                .and_then(|layout| layout.as_ref().map(|layout| layout.dtype))
        };
        let (gate, up, down) = (at(0, names.gate)?, at(0, names.up)?, at(0, names.down)?);
        if gate.is_some() && up.is_some() && gate != up {
            return Err(format!(
                "`{}` and `{}` in `{prefix}.{block}` differ in shape ({gate:?}, {up:?}): they cannot be fused into `gate_up_proj`",
                names.gate, names.up
            ));
        }
        let count = count as u64;
        // Unknown when a shard is absent: the banks are then known by name only.
        let gate_up = gate
            .zip(dtype(names.gate))
            .map(|([inner, hidden], dtype)| (dtype, vec![count, inner.saturating_mul(2), hidden]));
        let down = down
            .zip(dtype(names.down))
            .map(|([out, inner], dtype)| (dtype, vec![count, out, inner]));
        for (name, layout) in [("gate_up_proj", gate_up), ("down_proj", down)] {
            kept.push(CheckpointTensor {
                name: format!("{prefix}.mlp.experts.{name}"),
                shard: None,
                layout: layout.map(|(dtype, shape)| TensorLayout {
                    dtype,
                    shape,
                    data_offsets: (0, 0),
                }),
            });
        }
    }
    Ok(Some((
        Checkpoint::from_parts(Vec::new(), kept, checkpoint.config().cloned()),
        names,
    )))
}

/// `(block prefix, expert, projection)` of a per-expert projection's `weight`
/// (`model.layers.0` `3` `w1` of `model.layers.0.block_sparse_moe.experts.3.w1.weight`).
fn per_expert<'n>(
    name: &'n str,
    marker: &str,
    names: PerExpertNames,
) -> Option<(&'n str, usize, &'n str)> {
    let (prefix, rest) = name.split_once(marker)?;
    let (expert, rest) = rest.split_once('.')?;
    let projection = rest.strip_suffix(".weight")?;
    let known = [names.gate, names.up, names.down].contains(&projection);
    let canonical = expert == "0" || !expert.starts_with('0');
    (known && canonical)
        .then(|| Some((prefix, expert.parse().ok()?, projection)))
        .flatten()
}
