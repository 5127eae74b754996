//! The one error type of checkpoint reading: every variant names the file, and the tensor or entry
//! when there is one.

use std::io;
use std::path::PathBuf;

use safetensors::Dtype;

use crate::checkpoint::header::MAX_HEADER_LEN;

/// What went wrong reading a checkpoint. Every variant names the file.
///
/// The header variants follow the checks of the `safetensors` crate's reader, in its order (see
/// [`read_header`](crate::checkpoint::read_header)); several of its errors are split here so that
/// the message can say what was found.
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
    /// The file is shorter than the 8-byte header length (the reference's `HeaderTooSmall`).
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
    /// The header length exceeds [`MAX_HEADER_LEN`] (`HeaderTooLarge`).
    #[error("{}: header length {header_len} exceeds the limit of {MAX_HEADER_LEN} bytes", path.display())]
    HeaderTooLarge {
        /// The file.
        path: PathBuf,
        /// The header length the file declares.
        header_len: u64,
    },
    /// The header length runs past the end of the file (`InvalidHeaderLength`).
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
    /// The header is not UTF-8 (`InvalidHeader`).
    #[error("{}: header is not UTF-8: invalid byte at offset {valid_up_to} of the header", path.display())]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// The length of the header's valid prefix.
        valid_up_to: usize,
    },
    /// The header (or the index) is not valid JSON (`InvalidHeaderDeserialization`).
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: serde_json::Error,
    },
    /// The header is valid JSON but not an object (`InvalidHeaderDeserialization`).
    #[error("{}: header is not a JSON object but {found}", path.display())]
    NotAnObject {
        /// The file.
        path: PathBuf,
        /// What was found: `an array`, `a string`, ….
        found: &'static str,
    },
    /// A tensor's entry (or `__metadata__`) is malformed: a missing or unknown dtype, a shape that
    /// is not an array of sizes, offsets that are not two numbers (`InvalidHeaderDeserialization`).
    #[error("{}: tensor `{tensor}`: {problem}", path.display())]
    InvalidTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong, and what was expected.
        problem: String,
    },
    /// A key appears twice in the header (a departure: the reference keeps the last entry).
    #[error("{}: tensor `{tensor}` appears twice in the header", path.display())]
    DuplicateTensor {
        /// The file.
        path: PathBuf,
        /// The repeated key.
        tensor: String,
    },
    /// A tensor's offsets end before they begin (`InvalidOffset`).
    #[error("{}: tensor `{tensor}`: data_offsets [{begin}, {end}] end before they begin", path.display())]
    ReversedOffsets {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The start of its data.
        begin: u64,
        /// The end of its data.
        end: u64,
    },
    /// Two tensors' byte ranges overlap (`InvalidOffset`).
    #[error(
        "{}: tensors `{first}` [{first_begin}, {first_end}] and `{second}` [{second_begin}, {second_end}] overlap",
        path.display()
    )]
    OverlappingTensors {
        /// The file.
        path: PathBuf,
        /// The tensor that ends after the second starts.
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
    /// Bytes of the data section between two tensors belong to neither (`InvalidOffset`).
    #[error(
        "{}: bytes [{start}, {begin}) of the data section belong to no tensor: `{tensor}` starts at {begin}, {}",
        path.display(),
        match previous { Some(previous) => format!("but `{previous}` ends at {start}"), None => "but the data section starts at 0".to_owned() }
    )]
    Hole {
        /// The file.
        path: PathBuf,
        /// The tensor that ends where the hole starts, if any.
        previous: Option<String>,
        /// The tensor that starts after the hole.
        tensor: String,
        /// Where the hole starts.
        start: u64,
        /// Where the tensor starts.
        begin: u64,
    },
    /// A tensor's element count times its dtype's size overflows (`ValidationOverflow`).
    #[error("{}: tensor `{tensor}`: {dtype} {shape:?} is larger than 2^64 bits", path.display())]
    SizeOverflow {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype.
        dtype: Dtype,
        /// The shape.
        shape: Vec<u64>,
    },
    /// A tensor of a sub-byte dtype does not fill whole bytes (`MisalignedSlice`).
    #[error("{}: tensor `{tensor}`: {dtype} {shape:?} is not a whole number of bytes", path.display())]
    Misaligned {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype.
        dtype: Dtype,
        /// The shape.
        shape: Vec<u64>,
    },
    /// A tensor's byte range does not match its dtype and shape (`TensorInvalidInfo`).
    #[error(
        "{}: tensor `{tensor}`: data_offsets [{begin}, {end}] hold {} bytes, but {dtype} {shape:?} needs {expected}",
        path.display(), end.saturating_sub(*begin)
    )]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype.
        dtype: Dtype,
        /// The shape.
        shape: Vec<u64>,
        /// The start of its data, relative to the data section.
        begin: u64,
        /// The end of its data.
        end: u64,
        /// The bytes its dtype and shape need.
        expected: u64,
    },
    /// The tensors end past the data section: the file is cut short (`MetadataIncompleteBuffer`).
    #[error(
        "{}: tensor `{tensor}`: data_offsets [{begin}, {end}] exceed the data section of {data_len} bytes",
        path.display()
    )]
    OffsetsBeyondData {
        /// The file.
        path: PathBuf,
        /// The last tensor.
        tensor: String,
        /// The start of its data.
        begin: u64,
        /// The end of its data.
        end: u64,
        /// The length of the data section.
        data_len: u64,
    },
    /// Bytes follow the last tensor's data (`MetadataIncompleteBuffer`): a polyglot or damaged
    /// file.
    #[error(
        "{}: {} trailing bytes: the tensors cover {covered} bytes of a data section of {data_len}",
        path.display(), data_len.saturating_sub(*covered)
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// The bytes the tensors cover, from the start of the data section.
        covered: u64,
        /// The length of the data section.
        data_len: u64,
    },
    /// The index is not shaped like `model.safetensors.index.json`.
    #[error("{}: not a safetensors index: {problem}", path.display())]
    InvalidIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong, naming the entry.
        problem: String,
    },
    /// A shard named by the index does not exist (from
    /// [`Checkpoint::require_complete`](crate::checkpoint::Checkpoint::require_complete)).
    #[error("{}: shard `{shard}` is missing (looked for {})", index.display(), shard_path.display())]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The shard's name as written in the index.
        shard: String,
        /// Where it was looked for.
        shard_path: PathBuf,
    },
    /// The index maps a tensor to a shard whose header does not have it (from
    /// [`Checkpoint::require_complete`](crate::checkpoint::Checkpoint::require_complete)).
    #[error("{}: tensor `{tensor}` is mapped to shard `{shard}`, whose header has no such tensor", index.display())]
    TensorNotInShard {
        /// The index file.
        index: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The shard's name.
        shard: String,
    },
    /// A GGUF file whose header candle's `gguf_file` reader refuses.
    #[error("{}: not a readable GGUF file: {message}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// The reader's words.
        message: String,
    },
    /// A directory that holds no checkpoint this crate reads.
    #[error(
        "{}: a checkpoint directory holds `model.safetensors.index.json` or `model.safetensors`; this one holds neither",
        path.display()
    )]
    NoCheckpoint {
        /// The directory.
        path: PathBuf,
    },
}
