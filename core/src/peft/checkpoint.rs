//! A checkpoint's layers as the PEFT core sees them ([`LayerInfo`]), from its headers alone, so
//! that an adapter is planned against a checkpoint ([`Adapter::plan`](crate::peft::Adapter::plan)) by the rules the candle
//! and burn loaders use: what it adapts, whether it fits, and (with [`merge`](crate::peft::merge))
//! merging it without building a model.
//!
//! A linear's shape is its 2-D `weight` `[out_features, in_features]` (with `bias` if present),
//! an embedding's its `weight` `[num_embeddings, embedding_dim]`, a fused expert bank's its own
//! 3-D tensor `[experts, out, in]` (transformers 5's `gate_up_proj [E, 2I, H]`), or
//! `[experts, in, out]` for the model types that store it transposed (GPT-OSS, Aria: see
//! [`ModelConfig::experts_transposed`]). A layer
//! whose shape is unknown (its shard is absent) or that is quantized is [`LayerShape::Other`]:
//! PEFT's LoRA needs a float weight of a known shape.

use std::collections::HashMap;

use std::path::Path;

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointModule, ModelConfig};
use crate::kind::Kind;
use crate::peft::error::PeftError;
use crate::peft::layer::{Attachment, LayerInfo, LayerShape};
use crate::walk::walk;

/// The slot a checkpoint layer would need to take an adapter in
/// [`LoadMode::Attach`](crate::peft::LoadMode::Attach): a checkpoint has weights, not layers, so
/// only merging is possible.
pub const CHECKPOINT_SLOT: &str = "a model's own layer (a checkpoint can only be merged into)";

/// The checkpoint at `path` (see [`Checkpoint::open`]) with every shard present and every
/// tensor in its shard, as reading or rewriting its weights needs (inspection accepts absent
/// shards).
///
/// # Errors
///
/// [`PeftError::Checkpoint`] naming `path`, for a checkpoint that cannot be read or is not
/// complete.
pub(crate) fn open_complete(path: &Path) -> Result<Checkpoint, PeftError> {
    let checkpoint_error = |error: CheckpointError| PeftError::Checkpoint {
        path: path.to_owned(),
        message: error.to_string(),
    };
    // One shard of several, given alone, would be read as a whole model missing most of itself.
    if let Some(shards) = shard_count(path).filter(|&shards| shards > 1) {
        return Err(PeftError::Checkpoint {
            path: path.to_owned(),
            message: format!(
                "this is one shard of {shards}: give the checkpoint's directory, or its `model.safetensors.index.json`"
            ),
        });
    }
    let checkpoint = Checkpoint::open(path).map_err(checkpoint_error)?;
    checkpoint.require_complete().map_err(checkpoint_error)?;
    Ok(checkpoint)
}

/// The shard count a file's name gives, as transformers names shards
/// (`model-00002-of-00003.safetensors` is one of 3).
fn shard_count(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".safetensors")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (_, index) = rest.rsplit_once('-')?;
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    (digits(index) && digits(count)).then(|| count.parse().ok())?
}

/// Every leaf layer of `checkpoint` by joined path, with its shape where its header says it.
#[must_use]
pub fn checkpoint_layers(checkpoint: &Checkpoint) -> HashMap<String, LayerInfo> {
    let transposed = experts_transposed(checkpoint);
    let mut layers = HashMap::new();
    walk(checkpoint, |node| {
        let Some(kind) = node.kind() else {
            return;
        };
        let Some(module) = node.downcast_ref::<CheckpointModule>() else {
            return;
        };
        let shape = layer_shape(checkpoint, module, kind, transposed);
        layers.insert(
            node.path().to_string(),
            LayerInfo {
                type_name: node.type_name(),
                shape,
                attachment: Attachment::Plain {
                    slot: CHECKPOINT_SLOT,
                },
            },
        );
    });
    layers
}

/// Whether `checkpoint`'s fused expert banks are stored `[experts, in, out]`, as its
/// `config.json` says by its model type ([`ModelConfig::experts_transposed`]); without a config,
/// transformers' usual `[experts, out, in]`.
pub(crate) fn experts_transposed(checkpoint: &Checkpoint) -> bool {
    checkpoint
        .config()
        .is_some_and(ModelConfig::experts_transposed)
}

/// The shape of one layer from its tensors' headers; `transposed` when fused banks are stored
/// `[experts, in, out]`.
fn layer_shape(
    checkpoint: &Checkpoint,
    module: &CheckpointModule,
    kind: Kind,
    transposed: bool,
) -> LayerShape {
    if module.quantization().is_some() {
        return LayerShape::Other;
    }
    let tensors = checkpoint.tensors();
    let parameters = || module.parameter_names().zip(module.parameter_positions());
    // A parameter's shape in `usize`, when its header was read.
    let shape = |position: usize| {
        tensors
            .get(position)?
            .shape()?
            .iter()
            .map(|&axis| usize::try_from(axis).ok())
            .collect::<Option<Vec<usize>>>()
    };
    let weight = || {
        let (_, position) = parameters().find(|(name, _)| *name == "weight")?;
        shape(position)
    };
    match kind {
        // A fused bank owns the one tensor named like itself: `[experts, out, in]`, or
        // `[experts, in, out]` when transposed.
        Kind::GroupedLinear => match parameters()
            .find_map(|(_, position)| shape(position))
            .as_deref()
        {
            Some(&[experts, rows, cols]) => LayerShape::bank(experts, rows, cols, transposed),
            _ => LayerShape::Other,
        },
        Kind::Embedding => match weight().as_deref() {
            Some(&[num_embeddings, embedding_dim]) => LayerShape::Embedding {
                num_embeddings,
                embedding_dim,
            },
            _ => LayerShape::Other,
        },
        kind if kind.is_linear_family() || kind == Kind::Router => match weight().as_deref() {
            Some(&[out_features, in_features]) => LayerShape::Linear {
                in_features,
                out_features,
                bias: parameters().any(|(name, _)| name == "bias"),
            },
            _ => LayerShape::Other,
        },
        _ => LayerShape::Other,
    }
}
