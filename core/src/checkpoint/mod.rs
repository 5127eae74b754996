//! Reading the module tree of a checkpoint from its safetensors headers, without its weights.
//!
//! A `.safetensors` file starts with an 8-byte little-endian header length and a JSON header
//! that maps each tensor name to its dtype, shape and byte range in the data section that
//! follows. [`read_header`] reads and validates only that header: the length must fit in the
//! file, the header must be a JSON object, every tensor's byte range must match its dtype and
//! shape, lie within the data section and overlap no other. The data section is never read, so a
//! multi-gigabyte file answers as fast as a small one. [`Checkpoint::open`] reads one file, or
//! every shard named by a sharded checkpoint's `model.safetensors.index.json`.
//!
//! The tensor names give the module tree: `model.layers.0.self_attn.q_proj.weight` is the
//! parameter `weight` of the module `model.layers.0.self_attn.q_proj`. Since a checkpoint knows
//! no types, kinds are inferred from names and shapes:
//! - a module with no submodules that owns a 2-D `weight` is a linear candidate, or an embedding
//!   candidate when its name contains `embed`, or a router candidate when it is named `gate` or
//!   `router` beside an `experts` module;
//! - `lm_head` is an output head (left out of `all-linear`, as PEFT does);
//! - a module named `experts`, and everything below it, holds routed experts; a module named
//!   `shared_expert` or `shared_experts` beside one is a shared expert (Qwen2-MoE, DeepSeek);
//! - a module without parameters whose children are all indices is a container (`ModuleList`).
//!
//! A header does not keep the model's declaration order, so children come in name order, indices
//! numerically (`mlp` before `self_attn`, `layers.2` before `layers.10`).
//!
//! A [`Checkpoint`] implements [`ModuleTree`](crate::ModuleTree), so the `find_*` functions, targets and the
//! [`display`](crate::display) work on it like on any model, with indices normalized to `<>`.

mod header;
mod module;

pub use header::{CheckpointError, Header, MAX_HEADER_LEN, TensorInfo, dtype_bits, read_header};
pub use module::CheckpointModule;
#[cfg(feature = "candle")]
pub(crate) use module::ChildKey;

use header::json_type;
use module::Draft;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::display::{Summary, Tree};

/// A checkpoint's tensors and the module tree their names make.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    files: Vec<PathBuf>,
    tensors: Vec<TensorInfo>,
    root: CheckpointModule,
}

impl Checkpoint {
    /// Reads the checkpoint at `path`: a `.safetensors` file, a sharded checkpoint's
    /// `*.index.json`, or a directory holding `model.safetensors.index.json` or
    /// `model.safetensors`. Only headers are read.
    ///
    /// # Errors
    ///
    /// The first [`CheckpointError`] met, naming the file: an unreadable or invalid header, an
    /// invalid index, a missing shard, or a tensor the index maps to a shard that lacks it.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, CheckpointError> {
        let path = path.as_ref();
        if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            if index.exists() {
                return Checkpoint::open_index(&index);
            }
            return Checkpoint::open_file(&path.join("model.safetensors"));
        }
        let is_json = path
            .extension()
            .is_some_and(|extension| extension.eq_ignore_ascii_case("json"));
        if is_json {
            Checkpoint::open_index(path)
        } else {
            Checkpoint::open_file(path)
        }
    }

    /// Reads one `.safetensors` file's header.
    ///
    /// # Errors
    ///
    /// See [`read_header`].
    pub fn open_file(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let header = read_header(path)?;
        Ok(Checkpoint::from_tensors(
            vec![path.to_owned()],
            header.tensors,
        ))
    }

    /// Reads a sharded checkpoint's index (`{"weight_map": {tensor: shard file}}`) and the
    /// header of every shard it names, relative to the index's directory.
    ///
    /// # Errors
    ///
    /// See [`Checkpoint::open`].
    pub fn open_index(index: &Path) -> Result<Checkpoint, CheckpointError> {
        let text = std::fs::read(index).map_err(|source| CheckpointError::Io {
            path: index.to_owned(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|source| CheckpointError::Json {
                path: index.to_owned(),
                source,
            })?;
        let invalid = |problem: String| CheckpointError::InvalidIndex {
            path: index.to_owned(),
            problem,
        };
        let weight_map = value
            .get("weight_map")
            .ok_or_else(|| invalid("missing `weight_map`".to_owned()))?
            .as_object()
            .ok_or_else(|| invalid("`weight_map` should be an object".to_owned()))?;
        let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (tensor, shard) in weight_map {
            let shard = shard.as_str().ok_or_else(|| {
                invalid(format!(
                    "`weight_map.{tensor}` should be a shard file name, found {}",
                    json_type(shard)
                ))
            })?;
            shards.entry(shard).or_default().push(tensor);
        }
        let directory = index.parent().unwrap_or_else(|| Path::new(""));
        let mut files = Vec::with_capacity(shards.len());
        let mut tensors = Vec::with_capacity(weight_map.len());
        for (shard, mut names) in shards {
            let shard_path = directory.join(shard);
            if !shard_path.is_file() {
                return Err(CheckpointError::MissingShard {
                    index: index.to_owned(),
                    shard: shard.to_owned(),
                    shard_path,
                });
            }
            let header = read_header(&shard_path)?;
            // Both sorted by name: one merge pass moves the mapped tensors out of the header.
            names.sort_unstable();
            let mut shard_tensors = header.tensors.into_iter().peekable();
            for name in names {
                while shard_tensors
                    .next_if(|tensor| tensor.name.as_str() < name)
                    .is_some()
                {}
                match shard_tensors.next_if(|tensor| tensor.name == name) {
                    Some(tensor) => tensors.push(tensor),
                    None => {
                        return Err(CheckpointError::TensorNotInShard {
                            index: index.to_owned(),
                            tensor: name.to_owned(),
                            shard: shard.to_owned(),
                        });
                    }
                }
            }
            files.push(shard_path);
        }
        Ok(Checkpoint::from_tensors(files, tensors))
    }

    /// The checkpoint made of these tensors (from `files`), with the module tree of their names.
    #[must_use]
    pub fn from_tensors(files: Vec<PathBuf>, mut tensors: Vec<TensorInfo>) -> Checkpoint {
        tensors.sort_by(|left, right| left.name.cmp(&right.name));
        let mut root = Draft::default();
        for (position, tensor) in tensors.iter().enumerate() {
            let (module, parameter) = match tensor.name.rsplit_once('.') {
                Some((module, parameter)) => (Some(module), parameter),
                None => (None, tensor.name.as_str()),
            };
            let mut draft = &mut root;
            for segment in module.into_iter().flat_map(|module| module.split('.')) {
                draft = draft.child(segment);
            }
            draft.parameters.push((parameter.to_owned(), position));
        }
        let root = root.finish(None, false, false, &tensors);
        Checkpoint {
            files,
            tensors,
            root,
        }
    }

    /// The files read: one, or every shard.
    #[must_use]
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every tensor, sorted by name.
    #[must_use]
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The root module.
    #[must_use]
    pub fn root(&self) -> &CheckpointModule {
        &self.root
    }

    /// The folded tree, each module showing its parameters
    /// (`q_proj: Linear(weight: BF16[4096, 4096]) [linear]`).
    #[must_use]
    pub fn tree(&self) -> Tree {
        Tree::with_detail(self, |node| {
            let module = node.downcast_ref::<CheckpointModule>()?;
            (!module.parameters.is_empty()).then(|| module.describe_parameters(&self.tensors))
        })
    }

    /// The tree, targets and expert layers.
    #[must_use]
    pub fn summary(&self) -> Summary {
        Summary::with_tree(self, self.tree())
    }
}
