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

use crate::checkpoint::{Checkpoint, CheckpointTensor, TensorLayout};
use crate::peft::per_expert::PerExpertNames;

/// One block's experts: how many there are, and expert 0's gate and down projections (seen, and
/// their layouts when their shard's header was read).
#[derive(Default)]
struct Experts {
    count: usize,
    gate: Option<Option<TensorLayout>>,
    down: Option<Option<TensorLayout>>,
}

/// `checkpoint` with each block's per-expert projections fused into transformers 5's banks, and
/// the per-expert names it uses; `None` when it holds no per-expert projections (it is fused
/// already, or has no experts), or when a block lacks expert 0's gate or down projection or
/// they are not matrices. A bank whose projections' shard is absent has no layout.
#[must_use]
pub(crate) fn fused_view(checkpoint: &Checkpoint) -> Option<(Checkpoint, PerExpertNames)> {
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
    let mut blocks: BTreeMap<&str, Experts> = BTreeMap::new();
    let mut kept: Vec<CheckpointTensor> = Vec::with_capacity(tensors.len());
    for tensor in tensors {
        if let Some((prefix, expert, projection)) = per_expert(&tensor.name, &marker, names) {
            let experts = blocks.entry(prefix).or_default();
            experts.count = experts.count.max(expert.checked_add(1)?);
            if expert == 0 {
                let layout = Some(tensor.layout.clone());
                if projection == names.gate {
                    experts.gate = layout;
                } else if projection == names.down {
                    experts.down = layout;
                }
            }
            continue;
        }
        let mut tensor = tensor.clone();
        if let Some(mixtral) = names.block {
            tensor.name = tensor.name.replace(&format!(".{mixtral}."), ".mlp.");
        }
        kept.push(tensor);
    }
    if blocks.is_empty() {
        return None;
    }
    for (prefix, experts) in blocks {
        let (gate, down) = (experts.gate?, experts.down?);
        let count = u64::try_from(experts.count).ok()?;
        // Unknown when a shard is absent: the banks are then known by name only.
        let gate_up = match gate {
            Some(gate) => {
                let [inner, hidden] = <[u64; 2]>::try_from(gate.shape).ok()?;
                Some((gate.dtype, vec![count, inner.checked_mul(2)?, hidden]))
            }
            None => None,
        };
        let down = match down {
            Some(down) => {
                let [out, inner] = <[u64; 2]>::try_from(down.shape).ok()?;
                Some((down.dtype, vec![count, out, inner]))
            }
            None => None,
        };
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
    Some((
        Checkpoint::from_parts(Vec::new(), kept, checkpoint.config().cloned()),
        names,
    ))
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
