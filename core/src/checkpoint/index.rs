//! A sharded checkpoint's `model.safetensors.index.json`, and its reconciliation with the
//! headers of the shards that are present.
//!
//! The index maps every tensor name to a shard file. Inspection needs no shard: the names alone
//! give the tree, so an index whose shards are all absent (the usual case for someone deciding
//! what to fine-tune) answers with shapes marked unknown. Each shard that is present has its
//! header read, and the two sources are reconciled both ways, each difference a
//! [`Note`]:
//! - a tensor the index maps to a present shard whose header lacks it is left out, unless another
//!   shard holds it ([`Note::NotInShard`]): the files say what the checkpoint holds, and a loader
//!   following the index would fail on it;
//! - a tensor a present shard holds that the index does not map there is kept
//!   ([`Note::NotInIndex`]): a loader that reads the whole shard gets it;
//! - a tensor two present shards hold is kept from the shard the index names
//!   ([`Note::HeldTwice`]); one the index maps to an absent shard but a present shard holds is
//!   kept from the present shard (its [`Note::NotInIndex`] says which).
//!
//! The index itself must be sound: at most [`MAX_INDEX_LEN`] bytes of UTF-8, a JSON object with a
//! `weight_map` object of strings, no tensor listed twice, and shard names that stay inside the
//! index's directory. Anything else is a [`CheckpointError::InvalidIndex`] naming the entry. A
//! shard is absent when nothing is at its path (a dangling link included); a directory there is
//! an error.

use std::borrow::Cow;
use std::fmt;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::checkpoint::error::CheckpointError;
use crate::checkpoint::header::{Header, deserialize_whole, read_header};
use crate::checkpoint::notes::Note;
use crate::checkpoint::{CheckpointTensor, Shard, TensorLayout};

/// The largest index read: DeepSeek-V3's, with 91,000 tensors, is under 10 MB.
pub const MAX_INDEX_LEN: u64 = 100_000_000;

/// An index's entries: shard names, and tensor names sorted with the shard each maps to. The
/// names borrow the index's text where they hold no escape.
pub(super) struct Index<'t> {
    pub shards: Vec<String>,
    pub tensors: Vec<(Cow<'t, str>, u32)>,
}

/// The bytes of the index at `path`, at most [`MAX_INDEX_LEN`] of them.
pub(super) fn read_index_text(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    let invalid = |problem: String| CheckpointError::InvalidIndex {
        path: path.to_owned(),
        problem,
    };
    let len = std::fs::metadata(path)
        .map_err(|source| CheckpointError::Io {
            path: path.to_owned(),
            source,
        })?
        .len();
    if len > MAX_INDEX_LEN {
        return Err(invalid(format!(
            "{len} bytes, above the limit of {MAX_INDEX_LEN}"
        )));
    }
    // The length is read again, bounded: a device or a file growing meanwhile reports another.
    // The reported length sizes the buffer (it is at most the limit here).
    let mut text = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_INDEX_LEN + 1).read_to_end(&mut text))
        .map_err(|source| CheckpointError::Io {
            path: path.to_owned(),
            source,
        })?;
    if text.len() as u64 > MAX_INDEX_LEN {
        return Err(invalid(format!(
            "more than the limit of {MAX_INDEX_LEN} bytes"
        )));
    }
    Ok(text)
}

/// Parses and checks the index read from `path`.
pub(super) fn parse_index<'t>(path: &Path, text: &'t [u8]) -> Result<Index<'t>, CheckpointError> {
    let invalid = |problem: String| CheckpointError::InvalidIndex {
        path: path.to_owned(),
        problem,
    };
    let mut failed = None;
    let mut index = Index {
        shards: Vec::new(),
        tensors: Vec::new(),
    };
    // One check of the whole text is cheaper than one per string.
    let text = std::str::from_utf8(text).map_err(|error| {
        invalid(format!(
            "not UTF-8: invalid byte at offset {}",
            error.valid_up_to()
        ))
    })?;
    let seed = IndexSeed {
        index: &mut index,
        failed: &mut failed,
    };
    if let Err((source, broken)) = deserialize_whole(text, seed) {
        if broken {
            failed = None;
        }
        return Err(match failed {
            Some(problem) => invalid(problem),
            None => CheckpointError::Json {
                path: path.to_owned(),
                source,
            },
        });
    }
    index
        .tensors
        .sort_unstable_by(|left, right| left.0.cmp(&right.0));
    if let Some(pair) = index.tensors.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(invalid(format!(
            "tensor `{}` is listed twice in `weight_map`",
            pair[0].0
        )));
    }
    for shard in &index.shards {
        let inside = !shard.is_empty()
            && Path::new(shard)
                .components()
                .all(|component| matches!(component, Component::Normal(_)));
        if !inside {
            return Err(invalid(format!(
                "shard `{shard}` is not a file name inside the index's directory"
            )));
        }
    }
    Ok(index)
}

/// The tensors of an index and of its present shards, reconciled, sorted by name.
pub(super) struct Reconciled {
    pub shards: Vec<Shard>,
    pub files: Vec<PathBuf>,
    pub tensors: Vec<CheckpointTensor>,
    pub notes: Vec<Note>,
}

pub(super) fn reconcile(directory: &Path, index: Index<'_>) -> Result<Reconciled, CheckpointError> {
    let Index { shards, tensors } = index;
    let mut by_shard: Vec<Vec<&str>> = vec![Vec::new(); shards.len()];
    // Already sorted by name, so each shard's list is too.
    for (name, shard) in &tensors {
        by_shard[*shard as usize].push(name);
    }
    let mut out = Reconciled {
        shards: Vec::with_capacity(shards.len()),
        files: Vec::new(),
        tensors: Vec::with_capacity(tensors.len()),
        notes: Vec::new(),
    };
    let mut absent = Vec::new();
    let mut absent_tensors = 0;
    let paths: Vec<PathBuf> = shards.iter().map(|name| directory.join(name)).collect();
    let mut is_present = Vec::with_capacity(paths.len());
    for path in &paths {
        if path.is_dir() {
            return Err(CheckpointError::Io {
                path: path.clone(),
                source: std::io::Error::other("a directory where the index names a shard file"),
            });
        }
        is_present.push(path.is_file());
    }
    let present: Vec<&Path> = paths
        .iter()
        .zip(&is_present)
        .filter(|(_, present)| **present)
        .map(|(path, _)| path.as_path())
        .collect();
    let mut headers = read_headers(&present).into_iter();
    for (id, ((name, names), (path, present))) in shards
        .into_iter()
        .zip(by_shard)
        .zip(paths.iter().zip(is_present))
        .enumerate()
    {
        if present {
            let header = headers.next().ok_or_else(|| CheckpointError::Io {
                path: path.clone(),
                source: std::io::Error::other("header not read"),
            })??;
            merge_shard(&mut out, id, &name, header, names);
            out.files.push(path.clone());
        } else {
            absent_tensors += names.len();
            out.tensors
                .extend(names.into_iter().map(|tensor| CheckpointTensor {
                    name: tensor.to_owned(),
                    shard: Some(id),
                    layout: None,
                }));
            absent.push(name.clone());
        }
        out.shards.push(Shard {
            name,
            path: path.clone(),
            present,
        });
    }
    if !absent.is_empty() {
        absent.sort();
        out.notes.insert(
            0,
            Note::ShardsAbsent {
                shards: absent,
                of: out.shards.len(),
                tensors: absent_tensors,
            },
        );
    }
    out.tensors
        .sort_by(|left, right| left.name.cmp(&right.name));
    // A tensor held by two shards: keep the copy the index names.
    let mut kept: Vec<CheckpointTensor> = Vec::with_capacity(out.tensors.len());
    for tensor in std::mem::take(&mut out.tensors) {
        match kept.last_mut() {
            Some(last) if last.name == tensor.name => {
                // A copy whose header was read beats one the index maps to an absent shard:
                // that file is not there to hold it.
                match (last.layout.is_some(), tensor.layout.is_some()) {
                    (true, false) => continue,
                    (false, true) => {
                        *last = tensor;
                        continue;
                    }
                    _ => {}
                }
                let mapped = tensors
                    .binary_search_by(|(name, _)| name.as_ref().cmp(tensor.name.as_str()))
                    .ok()
                    .map(|position| tensors[position].1 as usize);
                let shard_name = |shard: Option<usize>| {
                    shard
                        .and_then(|shard| out.shards.get(shard))
                        .map_or_else(String::new, |shard| shard.name.clone())
                };
                let (keep, other) = if mapped.is_some() && tensor.shard == mapped {
                    (
                        tensor,
                        std::mem::replace(last, CheckpointTensor::placeholder()),
                    )
                } else {
                    (
                        std::mem::replace(last, CheckpointTensor::placeholder()),
                        tensor,
                    )
                };
                out.notes.push(Note::HeldTwice {
                    tensor: keep.name.clone(),
                    kept: shard_name(keep.shard),
                    other: shard_name(other.shard),
                });
                *last = keep;
            }
            _ => kept.push(tensor),
        }
    }
    out.tensors = kept;
    Ok(out)
}

/// The headers of `paths`, in order, read by up to one thread per core: each file is a few
/// system calls and a JSON parse, independent of the others.
fn read_headers(paths: &[&Path]) -> Vec<Result<Header, CheckpointError>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(paths.len() / HEADERS_PER_WORKER);
    if workers < 2 {
        return paths.iter().map(read_header).collect();
    }
    let next = AtomicUsize::new(0);
    let mut read: Vec<(usize, Result<Header, CheckpointError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut read = Vec::new();
                    loop {
                        let position = next.fetch_add(1, AtomicOrdering::Relaxed);
                        let Some(path) = paths.get(position) else {
                            break read;
                        };
                        read.push((position, read_header(path)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_default())
            .collect()
    });
    read.sort_unstable_by_key(|(position, _)| *position);
    read.into_iter().map(|(_, header)| header).collect()
}

/// The fewest headers worth a thread of their own.
const HEADERS_PER_WORKER: usize = 4;

/// Merges one present shard's header with the names the index maps to it (both sorted).
fn merge_shard(out: &mut Reconciled, id: usize, shard: &str, header: Header, names: Vec<&str>) {
    let mut not_in_shard = Vec::new();
    let mut not_in_index = Vec::new();
    let mut names = names.into_iter().peekable();
    for info in header.tensors {
        while let Some(name) = names.next_if(|name| *name < info.name.as_str()) {
            not_in_shard.push(name.to_owned());
        }
        if names.next_if(|name| *name == info.name).is_none() {
            not_in_index.push(info.name.clone());
        }
        out.tensors.push(CheckpointTensor {
            name: info.name,
            shard: Some(id),
            layout: Some(TensorLayout {
                dtype: info.dtype,
                shape: info.shape,
                data_offsets: info.data_offsets,
            }),
        });
    }
    not_in_shard.extend(names.map(str::to_owned));
    if !not_in_shard.is_empty() {
        out.notes.push(Note::NotInShard {
            shard: shard.to_owned(),
            tensors: not_in_shard,
        });
    }
    if !not_in_index.is_empty() {
        out.notes.push(Note::NotInIndex {
            shard: shard.to_owned(),
            tensors: not_in_index,
        });
    }
}

struct IndexSeed<'i, 't> {
    index: &'i mut Index<'t>,
    failed: &'i mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for IndexSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for IndexSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an index object with a `weight_map`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            if key != "weight_map" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if seen {
                *self.failed = Some("`weight_map` appears twice".to_owned());
                return Err(de::Error::custom("duplicate `weight_map`"));
            }
            seen = true;
            map.next_value_seed(WeightMapSeed {
                index: self.index,
                failed: self.failed,
                shards: FxHashMap::default(),
            })?;
        }
        if !seen {
            *self.failed = Some("missing `weight_map`".to_owned());
            return Err(de::Error::custom("missing `weight_map`"));
        }
        Ok(())
    }
}

struct WeightMapSeed<'i, 't> {
    index: &'i mut Index<'t>,
    failed: &'i mut Option<String>,
    shards: FxHashMap<String, u32>,
}

impl<'de> DeserializeSeed<'de> for WeightMapSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for WeightMapSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object mapping tensor names to shard files")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(Text(tensor)) = map.next_key::<Text<'de>>()? {
            let shard = match map.next_value::<Text<'de>>() {
                Ok(Text(shard)) => shard,
                Err(error) => {
                    *self.failed = Some(format!(
                        "`weight_map.{tensor}` should be a shard file name: {error}"
                    ));
                    return Err(error);
                }
            };
            // Names are mostly grouped by shard: the previous entry's shard is the likeliest.
            let previous = self.index.tensors.last().map(|&(_, id)| id).filter(|&id| {
                self.index
                    .shards
                    .get(id as usize)
                    .is_some_and(|known| *known == shard.as_ref())
            });
            let id = match previous.or_else(|| self.shards.get(shard.as_ref()).copied()) {
                Some(id) => id,
                None => {
                    let next = self.index.shards.len() as u32;
                    self.shards.insert(shard.clone().into_owned(), next);
                    self.index.shards.push(shard.into_owned());
                    next
                }
            };
            self.index.tensors.push((tensor, id));
        }
        Ok(())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.not_an_object()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_an_object()
    }
}

impl WeightMapSeed<'_, '_> {
    fn not_an_object<E: de::Error>(self) -> Result<(), E> {
        *self.failed = Some("`weight_map` should be an object".to_owned());
        Err(E::custom("`weight_map` is not an object"))
    }
}

/// A JSON string, borrowed from the text when it holds no escape. (serde's own `Cow<str>`
/// always copies.)
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(text)))
    }
}
