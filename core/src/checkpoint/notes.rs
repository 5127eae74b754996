//! What a checkpoint could not know, or found inconsistent, without failing: the one list
//! [`Checkpoint::notes`](crate::checkpoint::Checkpoint::notes) returns.

use core::fmt;
use std::path::PathBuf;

/// How many names a note prints before `… and N more`.
const SHOWN: usize = 5;

/// One thing inspection could not know or found inconsistent. Notes never stop inspection; each
/// says what the tree and targets rest on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Note {
    /// Shards named by the index are absent: their tensors are in the tree from their names
    /// alone, dtype and shape unknown, kinds inferred from names.
    ShardsAbsent {
        /// The absent shards, as the index names them.
        shards: Vec<String>,
        /// How many shards the index names.
        of: usize,
        /// How many tensors they hold.
        tensors: usize,
    },
    /// The index maps these tensors to a shard whose header lacks them: a loader following the
    /// index fails on them. Each is left out of the tree unless another shard holds it (then a
    /// [`NotInIndex`](Note::NotInIndex) note says which): the files, not the index, say what the
    /// checkpoint holds.
    NotInShard {
        /// The shard, as the index names it.
        shard: String,
        /// The tensors.
        tensors: Vec<String>,
    },
    /// A shard holds these tensors but the index does not map them to it: they are kept (a
    /// loader reading the whole shard gets them).
    NotInIndex {
        /// The shard.
        shard: String,
        /// The tensors.
        tensors: Vec<String>,
    },
    /// Two shards' headers hold the same tensor: the one the index maps it to is kept.
    HeldTwice {
        /// The tensor.
        tensor: String,
        /// The shard kept.
        kept: String,
        /// The other shard.
        other: String,
    },
    /// These tensor names cannot form module paths (an empty segment, or more than
    /// [`MAX_DEPTH`](crate::checkpoint::MAX_DEPTH) segments): they are listed by
    /// [`tensors`](crate::checkpoint::Checkpoint::tensors) but left out of the tree.
    UnusableNames {
        /// The names.
        tensors: Vec<String>,
    },
    /// No `config.json` beside the checkpoint: the vocabulary size, expert count and tied
    /// embeddings are not confirmed.
    NoConfig {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// `config.json` exists but could not be used.
    BadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// `config.json` and the tensors disagree (expert count, vocabulary size, quantization).
    ConfigMismatch {
        /// What disagrees, naming both sides.
        problem: String,
    },
    /// A GGUF file's quantized tensors (llama.cpp's block formats, which safetensors has no
    /// dtype for): shown with unknown dtype and shape, their kinds from names alone.
    GgufQuantized {
        /// How many tensors.
        tensors: usize,
        /// Their ggml types (`Q4K`, `Q8_0`, …).
        types: Vec<String>,
    },
    /// The output head is tied to the input embedding (`tie_word_embeddings`): it has no tensor
    /// of its own, and an adapter on the embedding changes the head too.
    TiedEmbeddings {
        /// The embedding's path.
        embedding: String,
    },
}

impl Note {
    /// Whether the note reports an inconsistency (rather than a limit of what could be known).
    #[must_use]
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Note::NotInShard { .. }
                | Note::NotInIndex { .. }
                | Note::HeldTwice { .. }
                | Note::UnusableNames { .. }
                | Note::BadConfig { .. }
                | Note::ConfigMismatch { .. }
        )
    }
}

/// `a`, `b`, `c` … and 12 more.
fn list(f: &mut fmt::Formatter<'_>, names: &[String]) -> fmt::Result {
    for (position, name) in names.iter().take(SHOWN).enumerate() {
        if position > 0 {
            f.write_str(", ")?;
        }
        write!(f, "`{name}`")?;
    }
    if names.len() > SHOWN {
        write!(f, " and {} more", names.len() - SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::ShardsAbsent {
                shards,
                of,
                tensors,
            } => {
                write!(f, "{} of {of} shards absent (", shards.len())?;
                list(f, shards)?;
                write!(
                    f,
                    "): the dtypes and shapes of their {tensors} tensors are unknown, and their \
                     kinds come from names alone"
                )
            }
            Note::GgufQuantized { tensors, types } => write!(
                f,
                "{tensors} tensors are quantized in GGUF block formats ({}): their dtypes and \
                 shapes are shown as unknown, and their kinds come from names alone",
                types.join(", ")
            ),
            Note::NotInShard { shard, tensors } => {
                write!(
                    f,
                    "the index maps {} tensor(s) to `{shard}`, whose header lacks them: ",
                    tensors.len()
                )?;
                list(f, tensors)
            }
            Note::NotInIndex { shard, tensors } => {
                write!(
                    f,
                    "`{shard}` holds {} tensor(s) the index does not map to it; kept: ",
                    tensors.len()
                )?;
                list(f, tensors)
            }
            Note::HeldTwice {
                tensor,
                kept,
                other,
            } => write!(
                f,
                "`{tensor}` is in both `{kept}` and `{other}`; the one in `{kept}` is kept"
            ),
            Note::UnusableNames { tensors } => {
                write!(
                    f,
                    "{} tensor name(s) with an empty segment or too many segments are left out \
                     of the tree: ",
                    tensors.len()
                )?;
                list(f, tensors)
            }
            Note::NoConfig { path } => write!(
                f,
                "no {}: the vocabulary size, expert count and tied embeddings are not confirmed",
                path.display()
            ),
            Note::BadConfig { path, problem } => {
                write!(f, "{}: not used: {problem}", path.display())
            }
            Note::ConfigMismatch { problem } => write!(f, "config.json: {problem}"),
            Note::TiedEmbeddings { embedding } => write!(
                f,
                "the output head is tied to `{embedding}` (tie_word_embeddings): it has no \
                 tensor of its own, and adapting `{embedding}` changes the head too"
            ),
        }
    }
}
