//! The safetensors header of one file, read and validated without the data section.
//!
//! A `.safetensors` file is an 8-byte little-endian header length `n`, `n` bytes of UTF-8 JSON,
//! then the data section. [`read_header`] reads the first `8 + n` bytes and checks the header
//! the way the reference reader (`safetensors::SafeTensors::read_metadata`, crate 0.8) does, in
//! its order, so that a file one accepts the other accepts, and a file one refuses the other
//! refuses for the same reason:
//!
//! 1. the file holds at least 8 bytes ([`Truncated`](CheckpointError::Truncated));
//! 2. `n` is at most [`MAX_HEADER_LEN`] ([`HeaderTooLarge`](CheckpointError::HeaderTooLarge)),
//!    then fits in the file ([`HeaderBeyondFile`](CheckpointError::HeaderBeyondFile));
//! 3. the header is UTF-8 ([`InvalidUtf8`](CheckpointError::InvalidUtf8)) and a JSON object
//!    (leading and trailing JSON whitespace allowed, as writers pad it to align the data); each
//!    entry has a `dtype` the `safetensors` crate's [`Dtype`] knows (including `F8_E4M3FNUZ` and
//!    `F8_E5M2FNUZ`), a `shape` of sizes and two `data_offsets`; unknown fields of an entry are
//!    ignored; `"__metadata__"` is a string-to-string object or `null` (read as empty);
//! 4. taken in the order of their offsets, the tensors tile the data section from byte 0 without
//!    a gap or an overlap (zero-sized tensors included), each holding exactly the bytes its dtype
//!    and shape need, without overflow, in whole bytes;
//! 5. the last tensor ends exactly at the end of the file: no byte missing
//!    ([`OffsetsBeyondData`](CheckpointError::OffsetsBeyondData)), none trailing
//!    ([`TrailingBytes`](CheckpointError::TrailingBytes)).
//!
//! Departures from the reference, on purpose:
//! - a key that appears twice is refused ([`DuplicateTensor`](CheckpointError::DuplicateTensor));
//!   the reference keeps the last entry (a JSON map read into a `HashMap`), so a header could say
//!   two things of one tensor and be believed on one;
//! - the data section is never read, only its length taken from the file's, so a sparse or
//!   multi-terabyte file answers as fast as a small one;
//! - the reference's single `InvalidOffset` and `MetadataIncompleteBuffer` errors are split by
//!   what was found (reversed offsets, an overlap, a hole; bytes missing, bytes trailing), and
//!   every error names the file and the tensor.
//!
//! The header is parsed in one pass into typed entries, never into a `serde_json::Value` tree;
//! `serde_json` bounds its own nesting depth, and every size is checked arithmetic.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use safetensors::Dtype;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::checkpoint::error::CheckpointError;

/// The largest header accepted, as in the `safetensors` crate: 100 MB.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor of a safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// The element type.
    pub dtype: Dtype,
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
    /// The `__metadata__` string map; empty when absent or `null`.
    pub metadata: BTreeMap<String, String>,
    /// The length of the header JSON.
    pub header_len: u64,
    /// The length of the data section that follows the header.
    pub data_len: u64,
}

/// Reads and validates the header of the `.safetensors` file at `path`, without reading its data.
///
/// # Errors
///
/// A [`CheckpointError`] naming the file and, where there is one, the tensor: see the module
/// documentation for the checks and their order.
pub fn read_header(path: impl AsRef<Path>) -> Result<Header, CheckpointError> {
    let path = path.as_ref();
    let io_error = |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    };
    // Asked before opening: opening a pipe waits for a writer, and a device reads forever.
    if !std::fs::metadata(path).map_err(io_error)?.is_file() {
        return Err(io_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a directory, a device or a pipe)",
        )));
    }
    let mut file = File::open(path).map_err(io_error)?;
    let file_len = file.metadata().map_err(io_error)?.len();
    let Some(after_len) = file_len.checked_sub(8) else {
        return Err(CheckpointError::Truncated {
            path: path.to_owned(),
            len: file_len,
        });
    };
    let mut len_bytes = [0; 8];
    file.read_exact(&mut len_bytes).map_err(io_error)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_LEN {
        return Err(CheckpointError::HeaderTooLarge {
            path: path.to_owned(),
            header_len,
        });
    }
    if header_len > after_len {
        return Err(CheckpointError::HeaderBeyondFile {
            path: path.to_owned(),
            header_len,
            file_len,
        });
    }
    // At most `MAX_HEADER_LEN` bytes, which fits in `usize` on every supported target.
    let mut header = vec![0; usize::try_from(header_len).unwrap_or(0)];
    file.read_exact(&mut header).map_err(io_error)?;
    parse_header(path, &header, after_len - header_len)
}

/// Validates a header's bytes against a data section of `data_len` bytes.
///
/// # Errors
///
/// As [`read_header`], from the UTF-8 check on.
pub fn parse_header(path: &Path, json: &[u8], data_len: u64) -> Result<Header, CheckpointError> {
    let text = std::str::from_utf8(json).map_err(|error| CheckpointError::InvalidUtf8 {
        path: path.to_owned(),
        valid_up_to: error.valid_up_to(),
    })?;
    let mut failed = None;
    let mut parsed = Parsed::default();
    let seed = HeaderSeed {
        parsed: &mut parsed,
        failed: &mut failed,
    };
    if let Err((source, broken)) = deserialize_whole(text, seed) {
        if broken {
            failed = None;
        }
        return Err(match failed {
            Some(Failure::Entry(tensor, problem)) => CheckpointError::InvalidTensor {
                path: path.to_owned(),
                tensor,
                problem,
            },
            Some(Failure::NotAnObject(found)) => CheckpointError::NotAnObject {
                path: path.to_owned(),
                found,
            },
            None => CheckpointError::Json {
                path: path.to_owned(),
                source,
            },
        });
    }
    let Parsed {
        mut tensors,
        metadata,
    } = parsed;
    tensors.sort_unstable_by(|left, right| left.name.cmp(&right.name));
    if let Some(pair) = tensors.windows(2).find(|pair| pair[0].name == pair[1].name) {
        return Err(CheckpointError::DuplicateTensor {
            path: path.to_owned(),
            tensor: pair[0].name.clone(),
        });
    }
    validate_offsets(path, &tensors, data_len)?;
    Ok(Header {
        tensors,
        metadata: metadata.unwrap_or_default(),
        header_len: json.len() as u64,
        data_len,
    })
}

/// Runs `seed` over the whole of `text`. On failure, the error and whether the JSON itself is
/// broken (its syntax, or its end): then the entry the seed was reading when it broke, which the
/// seed records for its message, is beside the point.
pub(super) fn deserialize_whole<'de, S>(
    text: &'de str,
    seed: S,
) -> Result<(), (serde_json::Error, bool)>
where
    S: DeserializeSeed<'de, Value = ()>,
{
    let mut deserializer = serde_json::Deserializer::from_str(text);
    seed.deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|error| {
            let broken = error.is_syntax() || error.is_eof();
            (error, broken)
        })
}

/// The reference's `Metadata::validate`, then its buffer-length check: in offset order, each
/// tensor starts where the previous one ended and holds exactly its bytes; the last ends at the
/// end of the data section.
fn validate_offsets(
    path: &Path,
    tensors: &[TensorInfo],
    data_len: u64,
) -> Result<(), CheckpointError> {
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_unstable_by(|left, right| {
        (left.data_offsets, &left.name).cmp(&(right.data_offsets, &right.name))
    });
    let mut start = 0;
    let mut previous: Option<&TensorInfo> = None;
    for tensor in &by_offset {
        let (begin, end) = tensor.data_offsets;
        if end < begin {
            return Err(CheckpointError::ReversedOffsets {
                path: path.to_owned(),
                tensor: tensor.name.clone(),
                begin,
                end,
            });
        }
        if begin < start {
            // `start > 0`, so a previous tensor ended there.
            let first = previous.unwrap_or(tensor);
            return Err(CheckpointError::OverlappingTensors {
                path: path.to_owned(),
                first: first.name.clone(),
                first_begin: first.data_offsets.0,
                first_end: first.data_offsets.1,
                second: tensor.name.clone(),
                second_begin: begin,
                second_end: end,
            });
        }
        if begin > start {
            return Err(CheckpointError::Hole {
                path: path.to_owned(),
                previous: previous.map(|previous| previous.name.clone()),
                tensor: tensor.name.clone(),
                start,
                begin,
            });
        }
        let bits = tensor
            .shape
            .iter()
            .try_fold(1_u64, |count, &size| count.checked_mul(size))
            .and_then(|count| count.checked_mul(tensor.dtype.bitsize() as u64));
        let Some(bits) = bits else {
            return Err(CheckpointError::SizeOverflow {
                path: path.to_owned(),
                tensor: tensor.name.clone(),
                dtype: tensor.dtype,
                shape: tensor.shape.clone(),
            });
        };
        if bits % 8 != 0 {
            return Err(CheckpointError::Misaligned {
                path: path.to_owned(),
                tensor: tensor.name.clone(),
                dtype: tensor.dtype,
                shape: tensor.shape.clone(),
            });
        }
        if end - begin != bits / 8 {
            return Err(CheckpointError::SizeMismatch {
                path: path.to_owned(),
                tensor: tensor.name.clone(),
                dtype: tensor.dtype,
                shape: tensor.shape.clone(),
                begin,
                end,
                expected: bits / 8,
            });
        }
        start = end;
        previous = Some(tensor);
    }
    if start > data_len {
        let last = previous.map_or((String::new(), (0, 0)), |last| {
            (last.name.clone(), last.data_offsets)
        });
        return Err(CheckpointError::OffsetsBeyondData {
            path: path.to_owned(),
            tensor: last.0,
            begin: last.1.0,
            end: last.1.1,
            data_len,
        });
    }
    if start < data_len {
        return Err(CheckpointError::TrailingBytes {
            path: path.to_owned(),
            covered: start,
            data_len,
        });
    }
    Ok(())
}

#[derive(Default)]
struct Parsed {
    tensors: Vec<TensorInfo>,
    metadata: Option<BTreeMap<String, String>>,
}

/// Why parsing stopped, when it was not the JSON syntax itself.
enum Failure {
    Entry(String, String),
    NotAnObject(&'static str),
}

/// Streams the header's entries into [`Parsed`], remembering which entry failed.
struct HeaderSeed<'p> {
    parsed: &'p mut Parsed,
    failed: &'p mut Option<Failure>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl HeaderSeed<'_> {
    fn not_an_object<E: de::Error>(self, found: &'static str) -> Result<(), E> {
        *self.failed = Some(Failure::NotAnObject(found));
        Err(E::custom(format_args!("header is {found}")))
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a safetensors header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut metadata_seen = false;
        while let Some(name) = map.next_key::<String>()? {
            if name == "__metadata__" {
                let metadata = map.next_value::<Option<BTreeMap<String, String>>>();
                match metadata {
                    Ok(_) if metadata_seen => {
                        *self.failed = Some(Failure::Entry(
                            name,
                            "`__metadata__` appears twice in the header".to_owned(),
                        ));
                        return Err(de::Error::custom("duplicate `__metadata__`"));
                    }
                    Ok(metadata) => self.parsed.metadata = metadata,
                    Err(error) => {
                        let problem = format!("expected an object of strings or null: {error}");
                        *self.failed = Some(Failure::Entry(name, problem));
                        return Err(error);
                    }
                }
                metadata_seen = true;
                continue;
            }
            match map.next_value::<Entry<'de>>() {
                Ok(entry) => {
                    let Ok(dtype) = Dtype::deserialize(de::value::StrDeserializer::<
                        de::value::Error,
                    >::new(&entry.dtype)) else {
                        let problem = format!("unknown dtype `{}`", entry.dtype);
                        *self.failed = Some(Failure::Entry(name, problem));
                        return Err(de::Error::custom("unknown dtype"));
                    };
                    self.parsed.tensors.push(TensorInfo {
                        name,
                        dtype,
                        shape: entry.shape,
                        data_offsets: entry.data_offsets,
                    });
                }
                Err(error) => {
                    *self.failed = Some(Failure::Entry(name, error.to_string()));
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_an_object("an array")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object("a string")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object("a number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object("a number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_an_object("a number")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_an_object("null")
    }
}

/// A tensor's entry as written; the dtype is looked up afterwards, for a message that names it.
#[derive(Deserialize)]
#[serde(expecting = "an object with `dtype`, `shape` and `data_offsets`")]
struct Entry<'a> {
    #[serde(borrow)]
    dtype: Cow<'a, str>,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}
