//! Reading the module tree of a checkpoint from its safetensors headers, or from its index alone,
//! without its weights.
//!
//! [`Checkpoint::open`] takes a `.safetensors` file, a sharded checkpoint's
//! `model.safetensors.index.json`, a llama.cpp GGUF file (feature `candle`: `gguf::open`, its
//! names mapped to Hugging Face paths), or a directory holding either safetensors form. Only
//! headers are read ([`read_header`], which agrees with the `safetensors` crate's reader on every
//! case of its own test suite; its documentation lists the checks and the departures), so a
//! multi-terabyte checkpoint answers as fast as a small one. An index is enough: shards that are
//! absent leave their tensors in the tree from their names alone, dtype and shape unknown; those
//! present refine it, and index and headers are reconciled both ways (the `index` module's
//! rules). Whatever could not be known or did not agree is a [`Note`] in [`Checkpoint::notes`],
//! never a silent drop.
//!
//! The tensor names give the module tree: `model.layers.0.self_attn.q_proj.weight` is the
//! parameter `weight` of the module `model.layers.0.self_attn.q_proj`. Since a checkpoint knows
//! no types, each leaf's kind comes from one documented table, [`rules`]: linears (quantized
//! layouts included, shown in the type name), fused expert banks, norms, convolutions,
//! embeddings, routers, heads. A `config.json` beside the checkpoint ([`ModelConfig`]) confirms
//! the vocabulary size, the expert count and tied embeddings. Beyond the leaves:
//! - a module named `experts`, and everything below it, holds routed experts; a module named
//!   `shared_expert` or `shared_experts` beside one is a shared expert (Qwen2-MoE, DeepSeek);
//! - a module without parameters whose children are all indices is a container (`ModuleList`);
//!   an index is a segment in canonical decimal (`01` is a name, so `layers.01` and `layers.1`
//!   stay apart);
//! - the top of the tree is split into [`Tower`]s: the language model, and the vision, audio,
//!   projector and multi-token-prediction models beside it.
//!
//! A header does not keep the model's declaration order, so children come in name order, indices
//! numerically (`mlp` before `self_attn`, `layers.2` before `layers.10`).
//!
//! Untrusted input (headers, index, names, config) is processed with loops and explicit limits
//! ([`MAX_HEADER_LEN`], [`MAX_DEPTH`], the index and config size limits), checked arithmetic and
//! no `unwrap`: bad input is an error naming the file and the entry, or a note, never a panic.
//!
//! A [`Checkpoint`] implements [`ModuleTree`](crate::ModuleTree), so the `find_*` functions,
//! targets and the [`display`](crate::display) work on it like on any model, with indices
//! normalized to `<>`.

mod build;
mod config;
mod confirm;
mod error;
#[cfg(feature = "candle")]
pub mod gguf;
mod header;
mod index;
mod module;
mod notes;
pub mod rules;
mod towers;

pub use build::MAX_DEPTH;
pub use config::{MAX_CONFIG_LEN, ModelConfig};
pub use error::CheckpointError;
pub use header::{Header, MAX_HEADER_LEN, TensorInfo, parse_header, read_header};
pub use index::MAX_INDEX_LEN;
pub use module::CheckpointModule;
#[cfg(feature = "candle")]
pub(crate) use module::ChildKey;
pub use notes::Note;
pub use rules::{Quantization, Rule};
pub use safetensors::Dtype;
pub use towers::{TOWER_DEPTH, Tower, TowerKind};

use std::path::{Path, PathBuf};

use crate::display::{Summary, Tree};

/// One tensor of a checkpoint: its name, its shard, and what the shard's header says of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointTensor {
    /// The tensor's name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// The position in [`Checkpoint::shards`] of the file that holds it.
    pub shard: Option<usize>,
    /// Its dtype, shape and byte range; `None` when its shard is absent (index-only).
    pub layout: Option<TensorLayout>,
}

/// A tensor's dtype, shape and byte range, from its shard's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorLayout {
    /// The element type.
    pub dtype: Dtype,
    /// The shape.
    pub shape: Vec<u64>,
    /// The byte range of its data, relative to the start of the data section.
    pub data_offsets: (u64, u64),
}

impl CheckpointTensor {
    /// The shape, when the shard's header was read.
    #[must_use]
    pub fn shape(&self) -> Option<&[u64]> {
        self.layout.as_ref().map(|layout| layout.shape.as_slice())
    }

    /// The dtype, when the shard's header was read.
    #[must_use]
    pub fn dtype(&self) -> Option<Dtype> {
        self.layout.as_ref().map(|layout| layout.dtype)
    }

    /// `BF16[4096, 4096]`, or `?` when unknown.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.layout {
            Some(layout) => {
                let shape: Vec<String> = layout.shape.iter().map(u64::to_string).collect();
                format!("{}[{}]", layout.dtype, shape.join(", "))
            }
            None => "?".to_owned(),
        }
    }

    fn placeholder() -> CheckpointTensor {
        CheckpointTensor {
            name: String::new(),
            shard: None,
            layout: None,
        }
    }
}

impl From<TensorInfo> for CheckpointTensor {
    fn from(info: TensorInfo) -> CheckpointTensor {
        CheckpointTensor {
            name: info.name,
            shard: None,
            layout: Some(TensorLayout {
                dtype: info.dtype,
                shape: info.shape,
                data_offsets: info.data_offsets,
            }),
        }
    }
}

/// A file of a checkpoint: the single file, or a shard named by the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Its name as the index writes it (the file name for a single file).
    pub name: String,
    /// Where it was looked for.
    pub path: PathBuf,
    /// Whether it exists (its header was then read).
    pub present: bool,
}

/// A checkpoint's tensors, the module tree their names make, its towers and notes.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    index: Option<PathBuf>,
    shards: Vec<Shard>,
    files: Vec<PathBuf>,
    tensors: Vec<CheckpointTensor>,
    root: CheckpointModule,
    config: Option<ModelConfig>,
    towers: Vec<Tower>,
    tied_embedding: Option<String>,
    notes: Vec<Note>,
}

impl Checkpoint {
    /// Reads the checkpoint at `path`: a `.safetensors` file, a sharded checkpoint's
    /// `*.index.json`, a llama.cpp `.gguf` file (with the `candle` feature; `gguf::open`), or a
    /// directory holding `model.safetensors.index.json` or `model.safetensors`. Only headers are
    /// read, and only of the shards present; a `config.json` beside is read too.
    ///
    /// # Errors
    ///
    /// The first [`CheckpointError`] met, naming the file: an unreadable or invalid header or
    /// index, or a GGUF file in a build without `candle`. Absent shards and disagreements between index and headers are [`notes`](Self::notes).
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, CheckpointError> {
        let path = path.as_ref();
        if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            if index.exists() {
                return Checkpoint::open_index(&index);
            }
            let single = path.join("model.safetensors");
            if !single.exists() {
                return Err(CheckpointError::NoCheckpoint {
                    path: path.to_owned(),
                });
            }
            return Checkpoint::open_file(&single);
        }
        let extension = |wanted: &str| {
            path.extension()
                .is_some_and(|extension| extension.eq_ignore_ascii_case(wanted))
        };
        if extension("gguf") {
            return open_gguf(path);
        }
        if extension("json") {
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
        let tensors = header
            .tensors
            .into_iter()
            .map(|info| CheckpointTensor {
                shard: Some(0),
                ..CheckpointTensor::from(info)
            })
            .collect();
        let shard = Shard {
            name: path
                .file_name()
                .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
            path: path.to_owned(),
            present: true,
        };
        let (config, notes) = read_config(path);
        Ok(Checkpoint::assemble(
            None,
            vec![shard],
            vec![path.to_owned()],
            tensors,
            config,
            notes,
        ))
    }

    /// Reads a sharded checkpoint's index (`{"weight_map": {tensor: shard file}}`) and the
    /// header of every shard it names that is present, relative to the index's directory. The
    /// headers are read by up to one thread per core (`std::thread::available_parallelism`);
    /// the error, if any, is the first in the index's order of shards.
    ///
    /// # Errors
    ///
    /// See [`Checkpoint::open`].
    pub fn open_index(index: &Path) -> Result<Checkpoint, CheckpointError> {
        let text = index::read_index_text(index)?;
        let entries = index::parse_index(index, &text)?;
        let directory = index.parent().unwrap_or_else(|| Path::new(""));
        let reconciled = index::reconcile(directory, entries)?;
        let (config, mut notes) = read_config(index);
        notes.splice(0..0, reconciled.notes);
        Ok(Checkpoint::assemble(
            Some(index.to_owned()),
            reconciled.shards,
            reconciled.files,
            reconciled.tensors,
            config,
            notes,
        ))
    }

    /// The checkpoint made of these tensors (from `files`), with the module tree of their names;
    /// no `config.json` is read.
    #[must_use]
    pub fn from_tensors(files: Vec<PathBuf>, tensors: Vec<TensorInfo>) -> Checkpoint {
        Checkpoint::from_parts(files, tensors.into_iter().map(Into::into).collect(), None)
    }

    /// The checkpoint made of these tensors, known or not, with an optional `config.json`'s
    /// facts: what [`open`](Self::open) builds once the files are read.
    #[must_use]
    pub fn from_parts(
        files: Vec<PathBuf>,
        mut tensors: Vec<CheckpointTensor>,
        config: Option<ModelConfig>,
    ) -> Checkpoint {
        tensors.sort_by(|left, right| left.name.cmp(&right.name));
        Checkpoint::assemble(None, Vec::new(), files, tensors, config, Vec::new())
    }

    fn assemble(
        index: Option<PathBuf>,
        shards: Vec<Shard>,
        files: Vec<PathBuf>,
        tensors: Vec<CheckpointTensor>,
        config: Option<ModelConfig>,
        mut notes: Vec<Note>,
    ) -> Checkpoint {
        let built = build::build(&tensors, config.as_ref().and_then(|config| config.experts));
        if !built.unusable.is_empty() {
            notes.push(Note::UnusableNames {
                tensors: built.unusable,
            });
        }
        let mut root = built.root;
        confirm::mark_vocab_head(&mut root, &tensors, config.as_ref());
        let towers = towers::find(&root, config.as_ref().and_then(|config| config.layers));
        let found = confirm::leaves(&root);
        let tied_embedding = confirm::tied_embedding(&root, &found, config.as_ref());
        if let Some(embedding) = &tied_embedding {
            notes.push(Note::TiedEmbeddings {
                embedding: embedding.clone(),
            });
        }
        if let Some(config) = &config {
            notes.extend(confirm::confirm(&root, &found, &tensors, config));
        }
        Checkpoint {
            index,
            shards,
            files,
            tensors,
            root,
            config,
            towers,
            tied_embedding,
            notes,
        }
    }

    /// The files whose headers were read: the single file, or every shard present.
    #[must_use]
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every file the checkpoint names, present or not: the single file, or the index's shards
    /// in the order the index first names them.
    #[must_use]
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The index read, for a sharded checkpoint.
    #[must_use]
    pub fn index(&self) -> Option<&Path> {
        self.index.as_deref()
    }

    /// Every tensor, sorted by name; those of absent shards without a layout.
    #[must_use]
    pub fn tensors(&self) -> &[CheckpointTensor] {
        &self.tensors
    }

    /// The root module.
    #[must_use]
    pub fn root(&self) -> &CheckpointModule {
        &self.root
    }

    /// The facts of the `config.json` beside the checkpoint, if one was read.
    #[must_use]
    pub fn config(&self) -> Option<&ModelConfig> {
        self.config.as_ref()
    }

    /// The towers: the language model first, then the others by path.
    #[must_use]
    pub fn towers(&self) -> &[Tower] {
        &self.towers
    }

    /// The tower that holds the module at `path` (a joined module path): the innermost tower
    /// containing it, on segment boundaries.
    #[must_use]
    pub fn tower_of(&self, path: &str) -> Option<&Tower> {
        self.towers
            .iter()
            .filter(|tower| tower.contains(path))
            .max_by_key(|tower| tower.path.len())
    }

    /// The path of the embedding the output head is tied to, when `config.json` ties them
    /// (`tie_word_embeddings`, transformers' default when absent) and no head has its own
    /// tensor.
    #[must_use]
    pub fn tied_embedding(&self) -> Option<&str> {
        self.tied_embedding.as_deref()
    }

    /// What could not be known, or did not agree: absent shards, index and headers apart,
    /// unusable names, `config.json` missing or disagreeing, tied embeddings.
    #[must_use]
    pub fn notes(&self) -> &[Note] {
        &self.notes
    }

    /// Checks that every shard is present and every tensor the index maps is in its shard, as
    /// loading the weights needs.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::MissingShard`] for the first absent shard, or
    /// [`CheckpointError::TensorNotInShard`] for the first tensor its shard lacks.
    pub fn require_complete(&self) -> Result<(), CheckpointError> {
        let index = self.index.clone().unwrap_or_default();
        if let Some(shard) = self.shards.iter().find(|shard| !shard.present) {
            return Err(CheckpointError::MissingShard {
                index,
                shard: shard.name.clone(),
                shard_path: shard.path.clone(),
            });
        }
        for note in &self.notes {
            if let Note::NotInShard { shard, tensors } = note {
                return Err(CheckpointError::TensorNotInShard {
                    index,
                    tensor: tensors.first().cloned().unwrap_or_default(),
                    shard: shard.clone(),
                });
            }
        }
        Ok(())
    }

    /// The folded tree, each module showing its parameters
    /// (`q_proj: Linear(weight: BF16[4096, 4096]) [linear]`, `weight: ?` when unknown).
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

/// A llama.cpp GGUF file, read with candle's reader ([`gguf::open`]).
#[cfg(feature = "candle")]
fn open_gguf(path: &Path) -> Result<Checkpoint, CheckpointError> {
    gguf::open(path)
}

/// Without candle, GGUF files are not read.
#[cfg(not(feature = "candle"))]
fn open_gguf(path: &Path) -> Result<Checkpoint, CheckpointError> {
    Err(CheckpointError::Gguf {
        path: path.to_owned(),
        message: "this build reads GGUF files with moduletree's `candle` feature".to_owned(),
    })
}

/// The `config.json` beside `path`, and a note when it is absent or unusable.
fn read_config(path: &Path) -> (Option<ModelConfig>, Vec<Note>) {
    let config = path
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join("config.json");
    if !config.is_file() {
        return (None, vec![Note::NoConfig { path: config }]);
    }
    match ModelConfig::read(&config) {
        Ok(facts) => (Some(facts), Vec::new()),
        Err(problem) => (
            None,
            vec![Note::BadConfig {
                path: config,
                problem,
            }],
        ),
    }
}
