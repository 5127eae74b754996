//! llama.cpp's GGUF files as checkpoints: the header read with candle's `gguf_file` reader
//! (feature `candle`; no tensor data is read), llama.cpp's tensor names mapped to the Hugging
//! Face paths transformers uses, so the tree, kinds and targets are those of the same model's
//! safetensors checkpoint.
//!
//! The names are llama.cpp's (`gguf-py/gguf/tensor_mapping.py`, `constants.py`):
//!
//! | GGUF | Hugging Face |
//! |---|---|
//! | `token_embd` | `model.embed_tokens` |
//! | `output_norm` | `model.norm` |
//! | `output` | `lm_head` |
//! | `blk.N.attn_norm` / `ffn_norm` | `model.layers.N.input_layernorm` / `post_attention_layernorm` |
//! | `blk.N.attn_q` / `attn_k` / `attn_v` / `attn_output` | `model.layers.N.self_attn.q_proj` / `k_proj` / `v_proj` / `o_proj` |
//! | `blk.N.attn_q_norm` / `attn_k_norm` | `model.layers.N.self_attn.q_norm` / `k_norm` |
//! | `blk.N.ffn_gate` / `ffn_up` / `ffn_down` | `model.layers.N.mlp.gate_proj` / `up_proj` / `down_proj` |
//! | `blk.N.ffn_gate_inp` | `model.layers.N.mlp.gate` (the router) |
//! | `blk.N.ffn_gate_exps` / `ffn_up_exps` / `ffn_down_exps` | `model.layers.N.mlp.experts.gate_proj` / `up_proj` / `down_proj` (fused banks `[E, out, in]`; a bank's `bias` is `down_proj_bias`) |
//! | `blk.N.ffn_gate_shexp` / `ffn_up_shexp` / `ffn_down_shexp` | `model.layers.N.mlp.shared_expert.gate_proj` / `up_proj` / `down_proj` |
//!
//! A name outside the table is kept as it is. Two tensors of one name, or two whose names map
//! to one Hugging Face name (`output.weight` beside a `lm_head.weight`), are refused, as a
//! safetensors header with a duplicated key is. Shapes are row-major (`[out, in]`; GGUF writes
//! them innermost first and candle reverses them). `F32`, `F16` and `BF16` tensors keep their
//! dtype and shape; block-quantized ones (`Q4_K`, `Q8_0`, …) have none safetensors can name, so
//! they are shown unknown, with a [`Note::GgufQuantized`].

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read as _};
use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Content;

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointTensor, Dtype, Note, TensorLayout};

/// The block-name part of the table: llama.cpp's name after `blk.N.` and the Hugging Face path
/// after `model.layers.N.`.
const BLOCK: [(&str, &str); 18] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("ffn_gate_inp", "mlp.gate"),
    ("ffn_gate_exps", "mlp.experts.gate_proj"),
    ("ffn_up_exps", "mlp.experts.up_proj"),
    ("ffn_down_exps", "mlp.experts.down_proj"),
    ("ffn_gate_shexp", "mlp.shared_expert.gate_proj"),
    ("ffn_up_shexp", "mlp.shared_expert.up_proj"),
    ("ffn_down_shexp", "mlp.shared_expert.down_proj"),
];

/// The Hugging Face name of a GGUF tensor name (see the [module docs](self)); a name outside the
/// table is returned as it is.
///
/// ```
/// use moduletree::checkpoint::gguf::hf_name;
///
/// assert_eq!(hf_name("blk.3.attn_q.weight"), "model.layers.3.self_attn.q_proj.weight");
/// assert_eq!(hf_name("blk.0.ffn_down_exps.weight"), "model.layers.0.mlp.experts.down_proj");
/// assert_eq!(hf_name("blk.0.ffn_down_exps.bias"), "model.layers.0.mlp.experts.down_proj_bias");
/// assert_eq!(hf_name("token_embd.weight"), "model.embed_tokens.weight");
/// assert_eq!(hf_name("rope_freqs.weight"), "rope_freqs.weight");
/// ```
#[must_use]
pub fn hf_name(name: &str) -> String {
    let (module, parameter) = name.rsplit_once('.').unwrap_or((name, ""));
    let mapped = match module {
        "token_embd" => Some("model.embed_tokens".to_owned()),
        "output_norm" => Some("model.norm".to_owned()),
        "output" => Some("lm_head".to_owned()),
        _ => block_name(module),
    };
    match mapped {
        // A fused bank is a leaf at the parameter's own path, as transformers 5 names it, and
        // its other parameters are companions (`down_proj_bias`, as GPT-OSS names them).
        Some(path) if path.contains(".experts.") && parameter == "weight" => path,
        Some(path) if path.contains(".experts.") && !parameter.is_empty() => {
            format!("{path}_{parameter}")
        }
        Some(path) if parameter.is_empty() => path,
        Some(path) => format!("{path}.{parameter}"),
        None => name.to_owned(),
    }
}

/// Whether the header's metadata sets `general.alignment` to 0. Reads the metadata the way the
/// GGUF specification (llama.cpp's `docs/gguf.md`) lays it out, skipping every other value;
/// anything it cannot read is left to candle's reader, which reports it.
fn declares_zero_alignment(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut reader = BufReader::new(file);
    scan_alignment(&mut reader).unwrap_or(None) == Some(0)
}

/// The value of `general.alignment`, if an integer; `None` when absent.
fn scan_alignment(reader: &mut BufReader<File>) -> std::io::Result<Option<u64>> {
    let mut word = [0_u8; 4];
    reader.read_exact(&mut word)?;
    if &word != b"GGUF" {
        return Ok(None);
    }
    reader.read_exact(&mut word)?;
    let wide = u32::from_le_bytes(word) >= 2;
    let _tensors = read_length(reader, wide)?;
    let entries = read_length(reader, wide)?;
    for _ in 0..entries {
        const ALIGNMENT: &[u8; 17] = b"general.alignment";
        let key_len = read_length(reader, wide)?;
        let mut is_alignment = false;
        if key_len == ALIGNMENT.len() as u64 {
            let mut key = [0_u8; 17];
            reader.read_exact(&mut key)?;
            is_alignment = &key == ALIGNMENT;
        } else {
            skip(reader, key_len)?;
        }
        reader.read_exact(&mut word)?;
        let kind = u32::from_le_bytes(word);
        if is_alignment {
            return integer(reader, kind);
        }
        skip_value(reader, kind, wide, 0)?;
    }
    Ok(None)
}

/// A GGUF length: 64 bits from version 2 on, 32 in version 1.
fn read_length(reader: &mut BufReader<File>, wide: bool) -> std::io::Result<u64> {
    let mut bytes = [0_u8; 8];
    if wide {
        reader.read_exact(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    } else {
        reader.read_exact(&mut bytes[..4])?;
        Ok(u64::from(u32::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3],
        ])))
    }
}

fn skip(reader: &mut BufReader<File>, bytes: u64) -> std::io::Result<()> {
    let bytes = i64::try_from(bytes).map_err(std::io::Error::other)?;
    reader.seek_relative(bytes)
}

/// The byte size of a fixed-size value type (`None` for strings and arrays, or unknown).
const fn fixed_size(kind: u32) -> Option<u64> {
    match kind {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// An unsigned or non-negative integer value of type `kind`; `None` for another type.
fn integer(reader: &mut BufReader<File>, kind: u32) -> std::io::Result<Option<u64>> {
    let Some(size) = fixed_size(kind).filter(|_| matches!(kind, 0..=5 | 10 | 11)) else {
        return Ok(None);
    };
    let mut bytes = [0_u8; 8];
    let size = usize::try_from(size).unwrap_or(8);
    reader.read_exact(&mut bytes[..size])?;
    Ok(Some(u64::from_le_bytes(bytes)))
}

/// Skips one value of type `kind` (arrays nested at most 8 deep).
fn skip_value(
    reader: &mut BufReader<File>,
    kind: u32,
    wide: bool,
    depth: u8,
) -> std::io::Result<()> {
    match (kind, fixed_size(kind)) {
        (_, Some(size)) => skip(reader, size),
        (8, None) => {
            let len = read_length(reader, wide)?;
            skip(reader, len)
        }
        (9, None) if depth < 8 => {
            let mut word = [0_u8; 4];
            reader.read_exact(&mut word)?;
            let element = u32::from_le_bytes(word);
            let count = read_length(reader, wide)?;
            match fixed_size(element) {
                Some(size) => skip(reader, size.saturating_mul(count)),
                None => {
                    for _ in 0..count {
                        skip_value(reader, element, wide, depth + 1)?;
                    }
                    Ok(())
                }
            }
        }
        _ => Err(std::io::Error::other("unknown GGUF value type")),
    }
}

/// The tensor count the header declares (GGUF version 1 writes it in 32 bits, later versions in
/// 64), or `None` for a file too short to say, which the reader has already refused.
fn tensor_count(path: &Path) -> Option<u64> {
    let mut start = [0_u8; 16];
    File::open(path)
        .and_then(|mut file| file.read_exact(&mut start))
        .ok()?;
    let version = u32::from_le_bytes([start[4], start[5], start[6], start[7]]);
    Some(if version == 1 {
        u64::from(u32::from_le_bytes([
            start[8], start[9], start[10], start[11],
        ]))
    } else {
        u64::from_le_bytes([
            start[8], start[9], start[10], start[11], start[12], start[13], start[14], start[15],
        ])
    })
}

fn block_name(module: &str) -> Option<String> {
    let rest = module.strip_prefix("blk.")?;
    let (index, part) = rest.split_once('.')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (_, hf) = BLOCK.iter().find(|(gguf, _)| *gguf == part)?;
    Some(format!("model.layers.{index}.{hf}"))
}

/// Reads the header of the GGUF file at `path` as a [`Checkpoint`] with Hugging Face names.
///
/// # Errors
///
/// [`CheckpointError::Io`] when the file cannot be opened, [`CheckpointError::Gguf`] when its
/// header is not GGUF.
pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let file = File::open(path).map_err(|source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    })?;
    let gguf_error = |message: String| CheckpointError::Gguf {
        path: path.to_owned(),
        message,
    };
    // candle 0.11's reader divides by `general.alignment` unchecked: a file declaring 0 panics
    // inside it. It is refused first; should another path to that panic remain, the panic is
    // caught and reported as the bad file it is.
    if declares_zero_alignment(path) {
        return Err(gguf_error(
            "`general.alignment` is 0; the data section's alignment must be positive".to_owned(),
        ));
    }
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Content::read(&mut BufReader::new(file))
    }));
    let content = match read {
        Ok(Ok(content)) => content,
        Ok(Err(error)) => return Err(gguf_error(error.to_string())),
        Err(_) => {
            return Err(gguf_error(
                "the header is malformed (its reader failed on it: an alignment of 0?)".to_owned(),
            ));
        }
    };
    // candle keeps the tensors in a map: a name written twice would silently be one tensor.
    if let Some(count) = tensor_count(path)
        && count != content.tensor_infos.len() as u64
    {
        return Err(gguf_error(format!(
            "the header lists {count} tensors under {} distinct names: a name appears more than once",
            content.tensor_infos.len()
        )));
    }
    let mut quantized = 0;
    let mut types = BTreeSet::new();
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        let dtype = match info.ggml_dtype {
            GgmlDType::F32 => Some(Dtype::F32),
            GgmlDType::F16 => Some(Dtype::F16),
            GgmlDType::BF16 => Some(Dtype::BF16),
            other => {
                quantized += 1;
                types.insert(format!("{other:?}"));
                None
            }
        };
        let layout = dtype.map(|dtype| TensorLayout {
            dtype,
            shape: info.shape.dims().iter().map(|&axis| axis as u64).collect(),
            data_offsets: (info.offset, info.offset),
        });
        tensors.push(CheckpointTensor {
            name: hf_name(name),
            shard: None,
            layout,
        });
    }
    let mut names: Vec<(&str, &str)> = content
        .tensor_infos
        .keys()
        .zip(&tensors)
        .map(|(gguf, tensor)| (tensor.name.as_str(), gguf.as_str()))
        .collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(gguf_error(format!(
            "`{}` and `{}` both name `{}` in Hugging Face's names",
            pair[0].1, pair[1].1, pair[0].0
        )));
    }
    let mut checkpoint = Checkpoint::from_parts(vec![path.to_owned()], tensors, None);
    if quantized > 0 {
        checkpoint.notes.push(Note::GgufQuantized {
            tensors: quantized,
            types: types.into_iter().collect(),
        });
    }
    Ok(checkpoint)
}
