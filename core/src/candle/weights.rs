//! LoRA for candle models we cannot derive on: the adapter is merged into the checkpoint's own
//! weights, and the model loads them through a `VarBuilder` as it always does.
//!
//! [`PeftWeights::load`] reads a checkpoint's tensors, builds the module tree their names make
//! (kinds from [`Checkpoint`]'s rule table, [`rules`](crate::checkpoint::rules): linears, embeddings,
//! routers, fused expert banks), puts candle layers
//! at its leaves, and loads the PEFT adapter into that tree with
//! [`load_peft_adapter`](crate::candle::load_peft_adapter) in [`LoadMode::Merge`]: the same
//! selection, pairing, shape checks and refusals as a derived model, per-expert and fused expert
//! layouts included; a file the tree cannot take is refused whole. The merged weights then
//! replace the checkpoint's, and [`PeftWeights::var_builder`] hands them to any model that loads
//! through `VarBuilder` (candle-transformers' Llama, Mixtral, …) with no change to its code.
//! To write the merged checkpoint to disk instead, shard by shard and without candle, use
//! [`peft::merge`](crate::peft::merge).
//!
//! ```ignore
//! let weights = PeftWeights::load("model/", "adapter/", &Device::Cpu)?;
//! let (vb, reads) = weights.var_builder(DType::F32, &Device::Cpu);
//! let model = candle_transformers::models::llama::Llama::load(vb, &config)?;
//! reads.finish()?; // the model read every weight the adapter changed
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Embedding, Init, Linear, VarBuilder};

use crate::candle::bank::ExpertBank;
use crate::candle::weights_tree::WeightsModule;
use crate::peft::{AdaptedLayer, Adapter, LoadMode, PeftError};
use crate::walk::walk;

/// A checkpoint's weights with a PEFT adapter merged in, handed out through a `VarBuilder`: LoRA
/// for candle models this crate cannot derive on (candle-transformers'), by the rules of
/// [`load_peft_adapter`](crate::candle::load_peft_adapter) on the tree the tensor names make.
#[derive(Debug)]
pub struct PeftWeights {
    tensors: HashMap<String, Tensor>,
    adapted: Vec<AdaptedLayer>,
    changed: BTreeSet<String>,
}

impl PeftWeights {
    /// Reads the checkpoint at `checkpoint` (a `.safetensors` file, a
    /// `model.safetensors.index.json`, or a directory holding either) onto `device`, and merges
    /// the PEFT adapter in the directory `adapter` into it.
    ///
    /// # Errors
    ///
    /// [`PeftError::Checkpoint`] when the checkpoint cannot be read; every error of
    /// [`load_peft_adapter`](crate::candle::load_peft_adapter) (a key that names no layer of the
    /// checkpoint, a layer the config does not select, a shape that does not fit, a refused
    /// option, …).
    pub fn load(
        checkpoint: impl AsRef<Path>,
        adapter: impl AsRef<Path>,
        device: &Device,
    ) -> Result<PeftWeights, PeftError> {
        PeftWeights::load_adapter(checkpoint, &Adapter::read(adapter)?, device)
    }

    /// [`load`](Self::load) with an adapter already read.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub fn load_adapter(
        checkpoint: impl AsRef<Path>,
        adapter: &Adapter,
        device: &Device,
    ) -> Result<PeftWeights, PeftError> {
        let path = checkpoint.as_ref();
        let checkpoint_error = |message: String| PeftError::Checkpoint {
            path: path.to_owned(),
            message,
        };
        let index = crate::peft::checkpoint::open_complete(path)?;
        let mut tensors = HashMap::new();
        for file in index.files() {
            let read = candle_core::safetensors::load(file, device)
                .map_err(|error| checkpoint_error(format!("`{}`: {error}", file.display())))?;
            tensors.extend(read);
        }
        let mut tree = WeightsModule::build(&index, &tensors)?;
        // A fused-bank adapter (transformers 5) on a checkpoint that keeps its experts one by
        // one is split per expert first, as `merge` splits it.
        let split = crate::peft::merge::per_expert_if_needed(adapter, &index)?;
        let adapter = split.as_ref().unwrap_or(adapter);
        let adapted = crate::candle::load_adapter(&mut tree, adapter, LoadMode::Merge, "default")?;
        // Every layer's tensors go back under their names; those that differ are the changed.
        let mut changed = BTreeSet::new();
        let mut written: Vec<(String, Tensor)> = Vec::new();
        walk(&tree, |node| {
            let path = node.path().to_string();
            let mut put = |name: String, tensor: &Tensor| written.push((name, tensor.clone()));
            if let Some(linear) = node.downcast_ref::<Linear>() {
                put(format!("{path}.weight"), linear.weight());
                if let Some(bias) = linear.bias() {
                    put(format!("{path}.bias"), bias);
                }
            } else if let Some(embedding) = node.downcast_ref::<Embedding>() {
                put(format!("{path}.weight"), embedding.embeddings());
            } else if let Some(bank) = node.downcast_ref::<ExpertBank>() {
                put(path, bank.weight());
            }
        });
        for (name, tensor) in written {
            let same = tensors
                .get(&name)
                .is_some_and(|old| old.id() == tensor.id());
            if !same {
                changed.insert(name.clone());
                tensors.insert(name, tensor);
            }
        }
        Ok(PeftWeights {
            tensors,
            adapted,
            changed,
        })
    }

    /// The adapted layers, in walk order of the checkpoint's tree.
    #[must_use]
    pub fn adapted(&self) -> &[AdaptedLayer] {
        &self.adapted
    }

    /// The names of the tensors the adapter changed (merged factors, modules saved whole).
    pub fn changed(&self) -> impl Iterator<Item = &str> {
        self.changed.iter().map(String::as_str)
    }

    /// The weights by name, as they are after the merge.
    #[must_use]
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// A `VarBuilder` over the merged weights, converting each to `dtype` on `device` as it is
    /// read, and the record of which changed weights the model has read.
    #[must_use]
    pub fn var_builder(self, dtype: DType, device: &Device) -> (VarBuilder<'static>, Reads) {
        let unread = Arc::new(Mutex::new(self.changed));
        let backend = Tracked {
            tensors: self.tensors,
            unread: Arc::clone(&unread),
        };
        (
            VarBuilder::from_backend(Box::new(backend), dtype, device.clone()),
            Reads { unread },
        )
    }
}

/// Which changed weights a model has not read yet, from [`PeftWeights::var_builder`].
#[derive(Clone, Debug)]
pub struct Reads {
    unread: Arc<Mutex<BTreeSet<String>>>,
}

impl Reads {
    /// Checks that the model read every weight the adapter changed: an adapter tensor for a layer
    /// the model never loads (a head it ties to the embedding, a module it names otherwise) would
    /// otherwise be dropped without a word.
    ///
    /// # Errors
    ///
    /// [`PeftError::NotRead`] naming the weights never read.
    pub fn finish(&self) -> Result<(), PeftError> {
        let unread = self.unread.lock().unwrap_or_else(PoisonError::into_inner);
        if unread.is_empty() {
            Ok(())
        } else {
            Err(PeftError::NotRead {
                tensors: unread.iter().cloned().collect(),
            })
        }
    }
}

/// candle's backend over a map of tensors, recording which changed weights were read.
struct Tracked {
    tensors: HashMap<String, Tensor>,
    unread: Arc<Mutex<BTreeSet<String>>>,
}

impl Tracked {
    fn read(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let tensor = self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_owned(),
            }
            .bt()
        })?;
        self.unread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        tensor.to_dtype(dtype)?.to_device(device)
    }
}

impl SimpleBackend for Tracked {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.read(name, dtype, device)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.read(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
