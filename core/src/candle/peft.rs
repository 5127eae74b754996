//! PEFT LoRA adapters in and out: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! Loading accepts the key forms PEFT and its users write: `base_model.model.<path>.lora_A.weight`
//! or `<path>.lora_A.weight`, with or without an adapter-name infix (`lora_A.default.weight`),
//! and `lora_embedding_A` / `lora_embedding_B` for embeddings. Every tensor must belong to a pair
//! on a layer of the model with exactly the shape the layer needs (`lora_A: [r, in]`,
//! `lora_B: [out, r]`); anything else is refused before the model is touched. Saving writes PEFT's
//! own layout: prefixed keys without the adapter name, `{"format": "pt"}` metadata, a sorted
//! config; the same model always gives the same bytes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, View};

use crate::adapter_file::{FactorName, parse_factor_name};
use crate::candle::config::{LoraConfig, TargetModules};
use crate::candle::error::LoraError;
use crate::candle::lora::{
    DEFAULT_ADAPTER, LoraAdapter, LoraEmbedding, LoraLinear, merged_embedding, merged_linear,
};
use crate::candle::sites::{Change, Layer, Site, install, survey};
use crate::target::TargetSpec;
use crate::tree::ModuleTree;
use crate::walk::walk;

pub use crate::adapter_file::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};

/// What [`load_peft_adapter`] does with the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// Put the adapter into the [`LoraLinear`] / [`LoraEmbedding`] slots of the targeted layers
    /// (a plain layer is refused); the first adapter of a slot becomes active.
    Attach,
    /// Fold `W + scale · B · A` into the weights of the targeted layers, plain
    /// `candle_nn::Linear` / `Embedding` or slots alike: the model needs no slot.
    Merge,
}

/// Loads the PEFT adapter in `dir` into `model` under the name `"default"`; returns the adapted
/// paths in walk order.
///
/// # Errors
///
/// See [`load_peft_adapter_as`]. On any error `model` is exactly as it was.
pub fn load_peft_adapter<M: ModuleTree + ?Sized>(
    model: &mut M,
    dir: impl AsRef<Path>,
    mode: LoadMode,
) -> Result<Vec<String>, LoraError> {
    load_peft_adapter_as(model, dir, mode, DEFAULT_ADAPTER)
}

/// Loads the PEFT adapter in `dir` into `model` under the name `adapter` (used by
/// [`LoadMode::Attach`]); returns the adapted paths in walk order.
///
/// # Errors
///
/// Unreadable files; options this crate does not implement ([`LoraError::Unsupported`]: DoRA,
/// `target_parameters`, a `bias` other than `"none"`, …); a tensor that is not a LoRA tensor, names
/// no layer of the model, lacks its other half, or has the wrong shape or rank; a target that is
/// not a linear or an embedding; in `Attach` mode, a target that is not a slot or already holds an
/// adapter of that name. On any error `model` is exactly as it was.
pub fn load_peft_adapter_as<M: ModuleTree + ?Sized>(
    model: &mut M,
    dir: impl AsRef<Path>,
    mode: LoadMode,
    adapter: &str,
) -> Result<Vec<String>, LoraError> {
    let dir = dir.as_ref();
    let config = read_config(&dir.join(ADAPTER_CONFIG_FILE))?;
    if let Some((option, value)) = config.unsupported() {
        return Err(LoraError::Unsupported { option, value });
    }
    let file = dir.join(ADAPTER_WEIGHTS_FILE);
    let bytes = fs::read(&file).map_err(|source| LoraError::Io {
        file: file.clone(),
        source,
    })?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|error| {
        LoraError::Safetensors {
            file: file.clone(),
            message: error.to_string(),
        }
    })?;
    let pairs = pair_up(tensors)?;
    let ranks = config.ranks()?;
    let sites = survey(model);
    let mut changes = HashMap::with_capacity(pairs.len());
    for (path, pair) in pairs {
        let change = plan(
            &path,
            pair,
            sites.get(&path),
            (&config, &ranks),
            mode,
            adapter,
        )?;
        changes.insert(path, change);
    }
    let mut adapted: Vec<String> = changes.keys().cloned().collect();
    adapted.sort_by_key(|path| sites.get(path).map_or(usize::MAX, |site| site.order));
    install(model, changes);
    Ok(adapted)
}

fn read_config(file: &Path) -> Result<LoraConfig, LoraError> {
    let text = fs::read_to_string(file).map_err(|source| LoraError::Io {
        file: file.to_owned(),
        source,
    })?;
    LoraConfig::from_json(&text).map_err(|source| LoraError::Config {
        file: file.to_owned(),
        source,
    })
}

/// One tensor of a pair, with the name it was stored under.
#[derive(Debug)]
struct Half {
    name: String,
    tensor: Tensor,
}

/// The tensors stored for one module path.
#[derive(Debug, Default)]
struct Pair {
    a: Option<Half>,
    b: Option<Half>,
    embedding: bool,
}

/// The name of the other half of a pair: `lora_A` ↔ `lora_B`.
fn other_half(name: &str) -> String {
    for (from, to) in [
        ("lora_embedding_A", "lora_embedding_B"),
        ("lora_embedding_B", "lora_embedding_A"),
        ("lora_A", "lora_B"),
        ("lora_B", "lora_A"),
    ] {
        if let Some(at) = name.rfind(from) {
            return format!("{}{to}{}", &name[..at], &name[at + from.len()..]);
        }
    }
    name.to_owned()
}

/// Groups the tensors into pairs by module path; names are handled in sorted order so that the
/// first error reported does not depend on hashing.
fn pair_up(tensors: HashMap<String, Tensor>) -> Result<BTreeMap<String, Pair>, LoraError> {
    let mut named: Vec<(String, Tensor)> = tensors.into_iter().collect();
    named.sort_by(|left, right| left.0.cmp(&right.0));
    let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
    for (name, tensor) in named {
        let key = parse_factor_name(&name)
            .ok_or_else(|| LoraError::UnknownTensor { name: name.clone() })?;
        let fresh = !pairs.contains_key(key.path);
        let pair = pairs.entry(key.path.to_owned()).or_default();
        if fresh {
            pair.embedding = key.embedding;
        }
        let slot = if key.is_a { &mut pair.a } else { &mut pair.b };
        let clash = match (&*slot, pair.embedding != key.embedding) {
            (Some(existing), _) => Some(existing.name.clone()),
            (None, true) => [&pair.a, &pair.b]
                .into_iter()
                .flatten()
                .next()
                .map(|half| half.name.clone()),
            (None, false) => None,
        };
        if let Some(first) = clash {
            return Err(LoraError::Conflict {
                path: key.path.to_owned(),
                first,
                second: name,
            });
        }
        let slot = if key.is_a { &mut pair.a } else { &mut pair.b };
        *slot = Some(Half { name, tensor });
    }
    Ok(pairs)
}

/// Checks one pair against its layer and computes the change it makes.
fn plan(
    path: &str,
    pair: Pair,
    site: Option<&Site>,
    (config, ranks): (&LoraConfig, &TargetSpec),
    mode: LoadMode,
    adapter_name: &str,
) -> Result<Change, LoraError> {
    let (a, b) = match (pair.a, pair.b) {
        (Some(a), Some(b)) => (a, b),
        (Some(half), None) | (None, Some(half)) => {
            if site.is_none() {
                return Err(no_such_layer(&half.name, path));
            }
            return Err(LoraError::HalfPair {
                path: path.to_owned(),
                missing: other_half(&half.name),
                present: half.name,
            });
        }
        (None, None) => unreachable!("a pair is created with one of its halves"),
    };
    let site = site.ok_or_else(|| no_such_layer(&a.name, path))?;
    let (Some((rows, cols)), Some(weight)) = (site.shape(), site.weight()) else {
        return Err(site.not_adaptable(path));
    };
    if pair.embedding != site.is_embedding() {
        return Err(site.not_adaptable(path));
    }
    if mode == LoadMode::Attach {
        let Some(names) = site.slot_adapters() else {
            return Err(LoraError::NotASlot {
                path: path.to_owned(),
                type_name: site.type_name,
                slot: site.slot_name(),
            });
        };
        if names.iter().any(|name| name == adapter_name) {
            return Err(LoraError::DuplicateAdapter {
                path: path.to_owned(),
                adapter: adapter_name.to_owned(),
            });
        }
    }
    // Linear: weight [out, in], A [r, in], B [out, r]. Embedding: table [num, dim],
    // A [r, num], B [dim, r].
    let (a_cols, b_rows, a_axes, b_axes) = if pair.embedding {
        (rows, cols, "[r, num_embeddings]", "[embedding_dim, r]")
    } else {
        (cols, rows, "[r, in_features]", "[out_features, r]")
    };
    let (rank, alpha) = ranks.rank_and_alpha_for(path);
    let rank = rank as usize;
    check_shape(path, &a, &[rank, a_cols], a_axes, 0)?;
    check_shape(path, &b, &[b_rows, rank], b_axes, 1)?;
    let convert = |half: Half| {
        half.tensor
            .to_dtype(weight.dtype())
            .and_then(|tensor| tensor.to_device(weight.device()))
            .map_err(|source| LoraError::Tensor {
                path: path.to_owned(),
                source,
            })
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a dropout probability fits an f32"
    )]
    let adapter = LoraAdapter::new(convert(a)?, convert(b)?, alpha, config.use_rslora)
        .map_err(|error| error.at(path))?
        .with_dropout(config.lora_dropout as f32);
    let tensor_error = |source| LoraError::Tensor {
        path: path.to_owned(),
        source,
    };
    Ok(match (mode, &site.layer) {
        (LoadMode::Attach, _) => Change::Attach(adapter_name.to_owned(), adapter),
        (LoadMode::Merge, Layer::LoraLinear(base, _) | Layer::Linear(base)) => {
            Change::SetLinear(merged_linear(base, &adapter, 1.0).map_err(tensor_error)?)
        }
        (LoadMode::Merge, Layer::LoraEmbedding(base, _) | Layer::Embedding(base)) => {
            Change::SetEmbedding(merged_embedding(base, &adapter, 1.0).map_err(tensor_error)?)
        }
        (LoadMode::Merge, Layer::Other) => return Err(site.not_adaptable(path)),
    })
}

fn no_such_layer(name: &str, path: &str) -> LoraError {
    LoraError::NoSuchLayer {
        name: name.to_owned(),
        path: path.to_owned(),
    }
}

/// Checks a tensor against its expected shape; `rank_axis` is where the rank sits, so that a
/// tensor right in every other axis is reported as a rank mismatch.
fn check_shape(
    path: &str,
    half: &Half,
    expected: &[usize; 2],
    axes: &'static str,
    rank_axis: usize,
) -> Result<(), LoraError> {
    let found = half.tensor.dims();
    if found == expected {
        return Ok(());
    }
    let other = 1 - rank_axis;
    if found.len() == 2 && found[other] == expected[other] {
        return Err(LoraError::Rank {
            path: path.to_owned(),
            expected: expected[rank_axis],
            found: found[rank_axis],
        });
    }
    Err(LoraError::Shape {
        name: half.name.clone(),
        path: path.to_owned(),
        expected: expected.to_vec(),
        found: found.to_vec(),
        axes,
    })
}

/// Saves the active adapter of every slot of `model` to `dir` in PEFT's layout; returns the
/// saved paths in walk order.
///
/// # Errors
///
/// See [`save_peft_adapter_named`].
pub fn save_peft_adapter<M: ModuleTree + ?Sized>(
    model: &M,
    dir: impl AsRef<Path>,
    config: &LoraConfig,
) -> Result<Vec<String>, LoraError> {
    save(model, dir.as_ref(), config, None)
}

/// Saves the adapter named `adapter` of every slot that holds one to `dir` in PEFT's layout
/// (`adapter_config.json` and `adapter_model.safetensors`, loadable by PEFT's
/// `PeftModel.from_pretrained`); returns the saved paths in walk order.
///
/// The config is written as given, with `inference_mode = true` and, when it has no
/// `target_modules`, the distinct last segments of the saved paths. Tensors are written in their
/// dtype when it is `f32` or `f64`, otherwise as `f32`.
///
/// # Errors
///
/// [`LoraError::NothingToSave`] when no slot holds such an adapter; [`LoraError::ConfigMismatch`]
/// when an adapter's rank, alpha or rsLoRA disagrees with what `config` gives for its path (the
/// file would load back differently); file errors. Nothing is written unless everything checks.
pub fn save_peft_adapter_named<M: ModuleTree + ?Sized>(
    model: &M,
    dir: impl AsRef<Path>,
    config: &LoraConfig,
    adapter: &str,
) -> Result<Vec<String>, LoraError> {
    save(model, dir.as_ref(), config, Some(adapter))
}

/// One adapter to save (its tensors are shared, not copied).
struct Saved {
    path: String,
    name: String,
    adapter: LoraAdapter,
    embedding: bool,
}

fn save<M: ModuleTree + ?Sized>(
    model: &M,
    dir: &Path,
    config: &LoraConfig,
    adapter: Option<&str>,
) -> Result<Vec<String>, LoraError> {
    let mut saved: Vec<Saved> = Vec::new();
    walk(model, |node| {
        let (found, embedding) = if let Some(slot) = node.downcast_ref::<LoraLinear>() {
            let found = match adapter {
                Some(name) => slot.adapter(name).map(|found| (name, found)),
                None => slot.active_adapter(),
            };
            (found, false)
        } else if let Some(slot) = node.downcast_ref::<LoraEmbedding>() {
            let found = match adapter {
                Some(name) => slot.adapter(name).map(|found| (name, found)),
                None => slot.active_adapter(),
            };
            (found, true)
        } else {
            (None, false)
        };
        if let Some((name, found)) = found {
            saved.push(Saved {
                path: node.path().to_string(),
                name: name.to_owned(),
                adapter: found.clone(),
                embedding,
            });
        }
    });
    if saved.is_empty() {
        return Err(LoraError::NothingToSave {
            adapter: adapter.unwrap_or("(active)").to_owned(),
        });
    }
    let ranks = config.ranks()?;
    let mut tensors: Vec<(String, Raw)> = Vec::with_capacity(2 * saved.len());
    for entry in &saved {
        check_config(entry, config, &ranks)?;
        for (is_a, tensor) in [(true, entry.adapter.a()), (false, entry.adapter.b())] {
            let raw = Raw::of(tensor).map_err(|source| LoraError::Tensor {
                path: entry.path.clone(),
                source,
            })?;
            let name = FactorName {
                path: &entry.path,
                is_a,
                embedding: entry.embedding,
            };
            tensors.push((name.to_peft(), raw));
        }
    }
    let mut config = config.clone();
    config.inference_mode = true;
    if config.target_modules.is_none() {
        // The saved layers' full paths, sorted: a bare last name could select layers that were
        // not saved.
        let mut paths: Vec<String> = saved.iter().map(|entry| entry.path.clone()).collect();
        paths.sort();
        config.target_modules = Some(TargetModules::List(paths));
    }
    let weights_file = dir.join(ADAPTER_WEIGHTS_FILE);
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let bytes = safetensors::tensor::serialize(
        tensors.iter().map(|(name, raw)| (name.as_str(), raw)),
        Some(metadata),
    )
    .map_err(|error| LoraError::Safetensors {
        file: weights_file.clone(),
        message: error.to_string(),
    })?;
    let io = |file: &Path| {
        let file = file.to_owned();
        move |source| LoraError::Io { file, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let config_file = dir.join(ADAPTER_CONFIG_FILE);
    fs::write(&config_file, config.to_json()).map_err(io(&config_file))?;
    fs::write(&weights_file, bytes).map_err(io(&weights_file))?;
    Ok(saved.into_iter().map(|entry| entry.path).collect())
}

fn check_config(entry: &Saved, config: &LoraConfig, ranks: &TargetSpec) -> Result<(), LoraError> {
    let (rank, alpha) = ranks.rank_and_alpha_for(&entry.path);
    let rank = rank as usize;
    let adapter = &entry.adapter;
    let same_alpha = (adapter.alpha() - alpha).abs() <= 1e-9 * alpha.abs().max(1.0);
    if adapter.rank() == rank && same_alpha && adapter.is_rslora() == config.use_rslora {
        return Ok(());
    }
    Err(LoraError::ConfigMismatch {
        path: entry.path.clone(),
        adapter: entry.name.clone(),
        rank: adapter.rank(),
        alpha: adapter.alpha(),
        rslora: adapter.is_rslora(),
        config_rank: rank,
        config_alpha: alpha,
        config_rslora: config.use_rslora,
    })
}

/// A tensor's bytes, little-endian, ready for safetensors.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Raw {
    fn of(tensor: &Tensor) -> candle_core::Result<Raw> {
        let shape = tensor.dims().to_vec();
        let flat = tensor.flatten_all()?;
        let (dtype, data) = if tensor.dtype() == DType::F64 {
            let values = flat.to_vec1::<f64>()?;
            (
                Dtype::F64,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        } else {
            let values = flat.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            (
                Dtype::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        };
        Ok(Raw { dtype, shape, data })
    }
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }

    fn data_len(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_key_forms() {
        for (name, path, is_a, embedding) in [
            (
                "base_model.model.model.layers.0.q_proj.lora_A.weight",
                "model.layers.0.q_proj",
                true,
                false,
            ),
            (
                "model.layers.0.q_proj.lora_B.weight",
                "model.layers.0.q_proj",
                false,
                false,
            ),
            (
                "layers.1.up.lora_A.default.weight",
                "layers.1.up",
                true,
                false,
            ),
            (
                "base_model.model.embed.lora_embedding_A",
                "embed",
                true,
                true,
            ),
            ("embed.lora_embedding_B.other", "embed", false, true),
        ] {
            let key = parse_factor_name(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!((key.path, key.is_a, key.embedding), (path, is_a, embedding));
        }
        for name in [
            "lora_A.weight",
            "model.q_proj.weight",
            "model.q_proj.lora_A.bias",
            "model.q_proj.lora_A.a.b.weight",
            "model.q_proj.lora_magnitude_vector",
            "model..q_proj.lora_A.weight",
        ] {
            assert!(parse_factor_name(name).is_none(), "{name}");
        }
        assert_eq!(other_half("x.lora_A.weight"), "x.lora_B.weight");
        assert_eq!(other_half("x.lora_embedding_B"), "x.lora_embedding_A");
    }
}
