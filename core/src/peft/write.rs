//! Writing an adapter directory in PEFT's layout, from factors a framework read out of its
//! layers: one policy for candle and burn.
//!
//! - Tensors: `base_model.model.<path>.lora_A.weight` / `lora_B.weight` (`lora_embedding_A` /
//!   `lora_embedding_B` for embeddings), parameters of modules saved whole as
//!   `base_model.model.<path>.<param>`, `{"format": "pt"}` metadata, as PEFT 0.21's
//!   `save_pretrained` writes them; when `target_modules` names `embed_tokens` or `lm_head`,
//!   the adapted embedding layers' base weights too (`<path>.base_layer.weight`, PEFT's
//!   `save_embedding_layers="auto"`).
//! - `target_modules`: the shortest dotted suffixes that select exactly the saved layers under
//!   PEFT's exact-or-suffix rule on this model (full paths where no suffix is unique), sorted; the
//!   written config is resolved against the model before anything is written, and must select
//!   exactly the saved layers, in PEFT's reading and this crate's.
//! - `r` / `lora_alpha`: the most common rank and alpha (the first layer's among equals);
//!   `rank_pattern` / `alpha_pattern` key the other layers by full path.
//! - `exclude_modules`, `layers_to_transform`, `layers_pattern` are written as `null` (the list
//!   is exact); every other field comes from the caller's config.
//!
//! Both files are written to temporary files in the directory and renamed into place, the
//! weights first and the config last: an error while writing leaves the directory as it was,
//! and a new config is never beside old weights. (Two renames are not one atomic step: if the
//! last rename fails, the new weights stand beside the directory's previous config, if any.)

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use crate::path::push_path;
use crate::peft::adapter::{RawTensor, config_error, serialize_tensors};
use crate::peft::config::{LoraConfig, TargetModules, scale};
use crate::peft::error::PeftError;
use crate::peft::layer::AdaptedLayer;
use crate::peft::names::{
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, EMBEDDING_LAYER_NAMES, Factor, FactorName,
    FactorNaming, PEFT_PREFIX,
};
use crate::target::peft::compact_targets;
use crate::tree::ModuleTree;
use crate::walk::walk;

/// One layer's adapter, read out of the model for saving, in PEFT's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedFactors {
    /// The layer's path.
    pub path: String,
    /// A linear's or an embedding's naming.
    pub naming: FactorNaming,
    /// The rank.
    pub rank: u32,
    /// The alpha.
    pub alpha: f64,
    /// Whether the adapter scales by `alpha / √r`.
    pub rslora: bool,
    /// `A`: `[r, in]` (`[r, num_embeddings]`).
    pub a: RawTensor,
    /// `B`: `[out, r]` (`[embedding_dim, r]`).
    pub b: RawTensor,
    /// Whether the layer is a bank of experts fused in one weight (a `grouped_linear` leaf at
    /// `<module>.<parameter>`): its factors are `A: [E·r, in]`, `B: [out, r·E]`, keyed on the
    /// owning module and listed in `target_parameters`.
    pub bank: bool,
    /// The layer's base weight in PEFT's layout, for a layer named like an embedding layer
    /// ([`is_embedding_layer_name`](crate::peft::names::is_embedding_layer_name)): written as `<path>.base_layer.weight` when the saved
    /// `target_modules` names an embedding layer, as PEFT's `save_embedding_layers="auto"` does.
    pub base: Option<RawTensor>,
}

/// One parameter of a module saved whole, in PEFT's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedParameter {
    /// The layer's path.
    pub path: String,
    /// `weight` or `bias`.
    pub param: String,
    /// The values (a linear's weight `[out, in]`).
    pub tensor: RawTensor,
}

/// Writes `factors` and `parameters` of `model` to `dir` as a PEFT adapter (see the
/// [module docs](self)); `adapter` names the adapter in errors. Returns the saved layers.
///
/// # Errors
///
/// [`PeftError::NothingToSave`] without factors; [`PeftError::ConfigMismatch`] when a layer's
/// rsLoRA setting is not the config's; [`PeftError::Config`] / [`PeftError::Refused`] when the
/// resulting config is invalid; [`PeftError::Selection`] when it would not read back to exactly
/// the saved layers; [`PeftError::Io`] / [`PeftError::Safetensors`].
pub fn write_adapter<M: ModuleTree + ?Sized>(
    model: &M,
    dir: &Path,
    config: &LoraConfig,
    factors: &[SavedFactors],
    parameters: &[SavedParameter],
    adapter: &str,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    let config_file = dir.join(ADAPTER_CONFIG_FILE);
    if factors.is_empty() {
        return Err(PeftError::NothingToSave {
            adapter: adapter.to_owned(),
        });
    }
    if let Some(layer) = factors.iter().find(|f| f.rslora != config.use_rslora) {
        return Err(PeftError::ConfigMismatch {
            path: layer.path.clone(),
            adapter: adapter.to_owned(),
            rslora: layer.rslora,
            config_rslora: config.use_rslora,
        });
    }
    let written = saved_config(model, config, factors);
    written
        .validate()
        .map_err(|problem| config_error(&config_file, problem))?;
    let spec = written.target_spec().map_err(|source| PeftError::Config {
        file: config_file.clone(),
        source,
    })?;
    let resolution = spec.resolve(model).map_err(|source| PeftError::Selection {
        file: config_file.clone(),
        source,
    })?;
    let reads_back = resolution.layers.len() == factors.len()
        && resolution.layers.iter().zip(factors).all(|(layer, saved)| {
            layer.path == saved.path && layer.rank == saved.rank && same(layer.alpha, saved.alpha)
        });
    if !reads_back {
        return Err(PeftError::Config {
            file: config_file,
            source: crate::target::PeftConfigError::Conflict {
                field: "target_modules",
                message: "cannot be written so that it selects exactly the saved layers of this model",
            },
        });
    }
    let mut tensors: Vec<(String, RawTensor)> =
        Vec::with_capacity(2 * factors.len() + parameters.len());
    let keys = factor_paths(factors);
    for (layer, key_path) in factors.iter().zip(&keys) {
        for (factor, tensor) in [(Factor::A, &layer.a), (Factor::B, &layer.b)] {
            let name = FactorName {
                path: key_path,
                factor,
                naming: layer.naming,
            };
            tensors.push((name.to_peft(), tensor.clone()));
        }
    }
    // PEFT 0.21's `get_peft_model_state_dict` with `save_embedding_layers="auto"`: a list of
    // `target_modules` that names an embedding layer saves the adapted embeddings' base weights.
    let embedding_targeted = matches!(
        &written.target_modules,
        Some(TargetModules::List(names)) if names.iter().any(|name| EMBEDDING_LAYER_NAMES.contains(&name.as_str()))
    );
    if embedding_targeted {
        for layer in factors {
            if let Some(base) = &layer.base {
                tensors.push((
                    format!("{PEFT_PREFIX}{}.base_layer.weight", layer.path),
                    base.clone(),
                ));
            }
        }
    }
    for parameter in parameters {
        tensors.push((
            format!("{PEFT_PREFIX}{}.{}", parameter.path, parameter.param),
            parameter.tensor.clone(),
        ));
    }
    write_files(dir, &written, &tensors)?;
    Ok(factors
        .iter()
        .map(|layer| AdaptedLayer {
            path: layer.path.clone(),
            rank: layer.rank,
            alpha: layer.alpha,
            scale: scale(layer.rank, layer.alpha, layer.rslora),
        })
        .collect())
}

fn same(left: f64, right: f64) -> bool {
    (left - right).abs() <= 1e-9 * left.abs().max(1.0)
}

/// Writes `config` and `tensors` to `dir` as `adapter_config.json` and
/// `adapter_model.safetensors`, each to a temporary file renamed into place, the weights first
/// (see the [module docs](self)).
pub(crate) fn write_files(
    dir: &Path,
    config: &LoraConfig,
    tensors: &[(String, RawTensor)],
) -> Result<(), PeftError> {
    let config_file = dir.join(ADAPTER_CONFIG_FILE);
    let weights_file = dir.join(ADAPTER_WEIGHTS_FILE);
    let bytes = serialize_tensors(tensors, &weights_file)?;
    let io = |file: &Path| {
        let file = file.to_owned();
        move |source| PeftError::Io { file, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let write = |file: &Path, contents: &[u8]| -> Result<tempfile::NamedTempFile, PeftError> {
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io(file))?;
        temp.write_all(contents).map_err(io(file))?;
        temp.as_file().sync_all().map_err(io(file))?;
        Ok(temp)
    };
    let config_temp = write(&config_file, config.to_json().as_bytes())?;
    let weights_temp = write(&weights_file, &bytes)?;
    for (temp, file) in [(weights_temp, weights_file), (config_temp, config_file)] {
        temp.persist(&file).map_err(|error| PeftError::Io {
            file,
            source: error.error,
        })?;
    }
    Ok(())
}

/// The config written beside `factors`: the caller's, with the selection fields computed.
fn saved_config<M: ModuleTree + ?Sized>(
    model: &M,
    config: &LoraConfig,
    factors: &[SavedFactors],
) -> LoraConfig {
    // The most common (rank, alpha), the first layer's among equals, becomes the default.
    let mut counts: Vec<((u32, u64), usize)> = Vec::new();
    for layer in factors {
        let key = (layer.rank, layer.alpha.to_bits());
        match counts.iter_mut().find(|(seen, _)| *seen == key) {
            Some((_, count)) => *count += 1,
            None => counts.push((key, 1)),
        }
    }
    let mut common = counts.first().map_or((0, 0), |(key, _)| *key);
    let mut best = 0;
    for (key, count) in counts {
        if count > best {
            (common, best) = (key, count);
        }
    }
    let (rank, alpha) = (common.0, f64::from_bits(common.1));
    let mut written = config.clone();
    written.inference_mode = true;
    written.r = rank as usize;
    written.lora_alpha = alpha;
    // Banks are PEFT's `target_parameters`, everything else its `target_modules`; each list
    // rules out every other node, so each selects exactly its own layers.
    let modules = factors.iter().filter(|layer| !layer.bank);
    let banks = factors.iter().filter(|layer| layer.bank);
    written.target_modules = (modules.clone().count() > 0).then(|| {
        TargetModules::List(compact_targets(
            model,
            modules.map(|layer| layer.path.as_str()),
        ))
    });
    written.target_parameters = (banks.clone().count() > 0)
        .then(|| compact_targets(model, banks.map(|layer| layer.path.as_str())));
    written.rank_pattern = factors
        .iter()
        .filter(|layer| layer.rank != rank)
        .map(|layer| (layer.path.clone(), layer.rank as usize))
        .collect();
    written.alpha_pattern = factors
        .iter()
        .filter(|layer| layer.alpha.to_bits() != alpha.to_bits())
        .map(|layer| (layer.path.clone(), layer.alpha))
        .collect();
    written.exclude_modules = None;
    written.layers_to_transform = None;
    written.layers_pattern = None;
    written
}

/// The path each layer's factors are keyed on: its own, or for a bank PEFT's `ParamWrapper`
/// nesting on the owning module (`peft/tuners/tuners_utils.py`, `_inject_parameters`): of the `n`
/// banks saved under one module, in walk order, the last at `<module>`, the one before at
/// `<module>.base_layer`, and so on.
fn factor_paths(factors: &[SavedFactors]) -> Vec<String> {
    let module = |path: &str| {
        path.rsplit_once('.')
            .map_or("", |(module, _)| module)
            .to_owned()
    };
    let mut count: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for layer in factors.iter().filter(|layer| layer.bank) {
        *count.entry(module(&layer.path)).or_default() += 1;
    }
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    factors
        .iter()
        .map(|layer| {
            if !layer.bank {
                return layer.path.clone();
            }
            let owner = module(&layer.path);
            let position = seen.entry(owner.clone()).or_default();
            let depth = count.get(&owner).copied().unwrap_or(1) - 1 - *position;
            *position += 1;
            let mut key = owner;
            for _ in 0..depth {
                key.push_str(".base_layer");
            }
            key
        })
        .collect()
}

/// The joined paths of `model`'s leaf layers that lie in a module `config` saves whole
/// (`modules_to_save`): the layers whose parameters a save writes beside the factors.
///
/// # Errors
///
/// [`PeftError::Config`] when a `modules_to_save` name does not parse.
pub fn saved_module_layers<M: ModuleTree + ?Sized>(
    model: &M,
    config: &LoraConfig,
    dir: &Path,
) -> Result<HashSet<String>, PeftError> {
    let spec = config
        .saved_modules_spec()
        .map_err(|source| PeftError::Config {
            file: dir.join(ADAPTER_CONFIG_FILE),
            source,
        })?;
    let mut layers = HashSet::new();
    if spec.saved_modules().is_empty() {
        return Ok(layers);
    }
    let mut joined = String::new();
    walk(model, |node| {
        if !node.is_layer() {
            return;
        }
        joined.clear();
        push_path(&mut joined, node.path().segments(), false);
        if spec.in_saved_module(node.path().segments(), &joined) {
            layers.insert(joined.clone());
        }
    });
    Ok(layers)
}
