//! The safetensors header of one file, read and validated without the data section.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The largest header accepted, as in the `safetensors` crate: 100 MB.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// What went wrong reading a checkpoint. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is shorter than the 8-byte header length.
    #[error(
        "{}: truncated: {len} bytes, but a safetensors file starts with an 8-byte header length",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// The header length runs past the end of the file.
    #[error(
        "{}: header length {header_len} runs past the end of the file ({file_len} bytes, {} after the length)",
        path.display(), file_len.saturating_sub(8)
    )]
    HeaderBeyondFile {
        /// The file.
        path: PathBuf,
        /// The header length the file declares.
        header_len: u64,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// The header length exceeds [`MAX_HEADER_LEN`].
    #[error("{}: header length {header_len} exceeds the limit of {MAX_HEADER_LEN} bytes", path.display())]
    HeaderTooLarge {
        /// The file.
        path: PathBuf,
        /// The header length the file declares.
        header_len: u64,
    },
    /// The header (or the index) is not valid JSON.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: serde_json::Error,
    },
    /// The header is valid JSON but not an object.
    #[error("{}: header is not a JSON object but {found}", path.display())]
    NotAnObject {
        /// The file.
        path: PathBuf,
        /// What was found: `an array`, `a string`, ….
        found: &'static str,
    },
    /// A tensor's entry is malformed: a missing or unknown dtype, a bad shape or bad offsets.
    #[error("{}: tensor `{tensor}`: {problem}", path.display())]
    InvalidTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong, and what was expected.
        problem: String,
    },
    /// A tensor's byte range does not match its dtype and shape.
    #[error(
        "{}: tensor `{tensor}`: data_offsets [{begin}, {end}] hold {} bytes, but {dtype} {shape:?} needs {expected}",
        path.display(), end - begin
    )]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype.
        dtype: String,
        /// The shape.
        shape: Vec<u64>,
        /// The start of its data, relative to the data section.
        begin: u64,
        /// The end of its data.
        end: u64,
        /// The bytes its dtype and shape need.
        expected: u64,
    },
    /// A tensor's byte range ends past the data section.
    #[error(
        "{}: tensor `{tensor}`: data_offsets [{begin}, {end}] exceed the data section of {data_len} bytes",
        path.display()
    )]
    OffsetsBeyondData {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The start of its data.
        begin: u64,
        /// The end of its data.
        end: u64,
        /// The length of the data section.
        data_len: u64,
    },
    /// Two tensors' byte ranges overlap.
    #[error(
        "{}: tensors `{first}` [{first_begin}, {first_end}] and `{second}` [{second_begin}, {second_end}] overlap",
        path.display()
    )]
    OverlappingTensors {
        /// The file.
        path: PathBuf,
        /// The tensor that starts first.
        first: String,
        /// Its start.
        first_begin: u64,
        /// Its end.
        first_end: u64,
        /// The tensor that starts inside it.
        second: String,
        /// Its start.
        second_begin: u64,
        /// Its end.
        second_end: u64,
    },
    /// The index is not shaped like `model.safetensors.index.json`.
    #[error("{}: not a safetensors index: {problem}", path.display())]
    InvalidIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A shard named by the index does not exist.
    #[error("{}: shard `{shard}` is missing (looked for {})", index.display(), shard_path.display())]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The shard's name as written in the index.
        shard: String,
        /// Where it was looked for.
        shard_path: PathBuf,
    },
    /// The index maps a tensor to a shard whose header does not have it.
    #[error("{}: tensor `{tensor}` is mapped to shard `{shard}`, whose header has no such tensor", index.display())]
    TensorNotInShard {
        /// The index file.
        index: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The shard's name.
        shard: String,
    },
}

/// One tensor of a safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// The dtype as written in the header (`BF16`, `F32`, …).
    pub dtype: String,
    /// The shape.
    pub shape: Vec<u64>,
    /// The byte range of its data, relative to the start of the data section.
    pub data_offsets: (u64, u64),
}

/// The validated header of one `.safetensors` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The tensors, sorted by name.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` string map, if any.
    pub metadata: BTreeMap<String, String>,
    /// The length of the header JSON.
    pub header_len: u64,
    /// The length of the data section that follows the header.
    pub data_len: u64,
}

/// The bits per element of a safetensors dtype, by its name in a header (`"BF16"` → 16);
/// `None` for a name safetensors does not define.
#[must_use]
pub fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Reads and validates the header of the `.safetensors` file at `path`, without reading its data.
///
/// # Errors
///
/// A [`CheckpointError`] naming the file and the problem: it cannot be read, it is shorter than
/// 8 bytes, its header length runs past the file or exceeds [`MAX_HEADER_LEN`], the header is
/// not JSON or not an object, or a tensor's entry is malformed, does not match its dtype and
/// shape, exceeds the data section or overlaps another.
pub fn read_header(path: impl AsRef<Path>) -> Result<Header, CheckpointError> {
    let path = path.as_ref();
    let io_error = |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let file_len = file.metadata().map_err(io_error)?.len();
    if file_len < 8 {
        return Err(CheckpointError::Truncated {
            path: path.to_owned(),
            len: file_len,
        });
    }
    let mut len_bytes = [0; 8];
    file.read_exact(&mut len_bytes).map_err(io_error)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > file_len - 8 {
        return Err(CheckpointError::HeaderBeyondFile {
            path: path.to_owned(),
            header_len,
            file_len,
        });
    }
    if header_len > MAX_HEADER_LEN {
        return Err(CheckpointError::HeaderTooLarge {
            path: path.to_owned(),
            header_len,
        });
    }
    let mut header = Vec::new();
    file.take(header_len)
        .read_to_end(&mut header)
        .map_err(io_error)?;
    if header.len() as u64 != header_len {
        return Err(CheckpointError::Truncated {
            path: path.to_owned(),
            len: file_len,
        });
    }
    parse_header(path, &header, header_len, file_len - 8 - header_len)
}

/// Validates a header's JSON against a data section of `data_len` bytes.
fn parse_header(
    path: &Path,
    json: &[u8],
    header_len: u64,
    data_len: u64,
) -> Result<Header, CheckpointError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|source| CheckpointError::Json {
            path: path.to_owned(),
            source,
        })?;
    let serde_json::Value::Object(entries) = value else {
        return Err(CheckpointError::NotAnObject {
            path: path.to_owned(),
            found: json_type(&value),
        });
    };
    let mut tensors = Vec::with_capacity(entries.len());
    let mut metadata = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            metadata = parse_metadata(path, &entry)?;
        } else {
            tensors.push(parse_tensor(path, name, &entry, data_len)?);
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors
        .iter()
        .filter(|tensor| tensor.data_offsets.0 < tensor.data_offsets.1)
        .collect();
    by_offset.sort_by_key(|tensor| tensor.data_offsets);
    for pair in by_offset.windows(2) {
        let (first, second) = (pair[0], pair[1]);
        if second.data_offsets.0 < first.data_offsets.1 {
            return Err(CheckpointError::OverlappingTensors {
                path: path.to_owned(),
                first: first.name.clone(),
                first_begin: first.data_offsets.0,
                first_end: first.data_offsets.1,
                second: second.name.clone(),
                second_begin: second.data_offsets.0,
                second_end: second.data_offsets.1,
            });
        }
    }
    tensors.sort_by(|left, right| left.name.cmp(&right.name));
    Ok(Header {
        tensors,
        metadata,
        header_len,
        data_len,
    })
}

pub(super) fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn parse_metadata(
    path: &Path,
    entry: &serde_json::Value,
) -> Result<BTreeMap<String, String>, CheckpointError> {
    let invalid = |problem: String| CheckpointError::InvalidTensor {
        path: path.to_owned(),
        tensor: "__metadata__".to_owned(),
        problem,
    };
    let serde_json::Value::Object(map) = entry else {
        return Err(invalid(format!(
            "expected an object of strings, found {}",
            json_type(entry)
        )));
    };
    map.iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(text) => Ok((key.clone(), text.clone())),
            other => Err(invalid(format!(
                "value of `{key}` should be a string, found {}",
                json_type(other)
            ))),
        })
        .collect()
}

fn parse_tensor(
    path: &Path,
    name: String,
    entry: &serde_json::Value,
    data_len: u64,
) -> Result<TensorInfo, CheckpointError> {
    let invalid = |name: &str, problem: String| CheckpointError::InvalidTensor {
        path: path.to_owned(),
        tensor: name.to_owned(),
        problem,
    };
    let Some(entry) = entry.as_object() else {
        return Err(invalid(
            &name,
            format!(
                "expected an object with `dtype`, `shape` and `data_offsets`, found {}",
                json_type(entry)
            ),
        ));
    };
    let dtype = match entry.get("dtype") {
        Some(serde_json::Value::String(dtype)) => dtype.clone(),
        Some(other) => {
            return Err(invalid(
                &name,
                format!("`dtype` should be a string, found {}", json_type(other)),
            ));
        }
        None => return Err(invalid(&name, "missing `dtype`".to_owned())),
    };
    let Some(bits) = dtype_bits(&dtype) else {
        return Err(invalid(&name, format!("unknown dtype `{dtype}`")));
    };
    let shape = u64_array(entry.get("shape"))
        .ok_or_else(|| invalid(&name, "`shape` should be an array of sizes".to_owned()))?;
    let offsets = u64_array(entry.get("data_offsets")).ok_or_else(|| {
        invalid(
            &name,
            "`data_offsets` should be an array of two byte offsets".to_owned(),
        )
    })?;
    let [begin, end] = offsets[..] else {
        return Err(invalid(
            &name,
            format!(
                "`data_offsets` should hold two byte offsets, found {}",
                offsets.len()
            ),
        ));
    };
    if end < begin {
        return Err(invalid(
            &name,
            format!("`data_offsets` [{begin}, {end}] end before they begin"),
        ));
    }
    let expected = shape
        .iter()
        .try_fold(bits, |total, &size| total.checked_mul(size))
        .filter(|total_bits| total_bits % 8 == 0)
        .map(|total_bits| total_bits / 8);
    let Some(expected) = expected else {
        return Err(invalid(
            &name,
            format!("{dtype} {shape:?} is not a whole number of bytes below 2^64"),
        ));
    };
    if end - begin != expected {
        return Err(CheckpointError::SizeMismatch {
            path: path.to_owned(),
            tensor: name,
            dtype,
            shape,
            begin,
            end,
            expected,
        });
    }
    if end > data_len {
        return Err(CheckpointError::OffsetsBeyondData {
            path: path.to_owned(),
            tensor: name,
            begin,
            end,
            data_len,
        });
    }
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        data_offsets: (begin, end),
    })
}

fn u64_array(value: Option<&serde_json::Value>) -> Option<Vec<u64>> {
    value?
        .as_array()?
        .iter()
        .map(serde_json::Value::as_u64)
        .collect()
}
