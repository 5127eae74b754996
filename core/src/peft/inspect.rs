//! What a PEFT adapter holds and what is wrong with it, from `adapter_config.json` and the
//! header of `adapter_model.safetensors` alone (no tensor data is read), and whether it would
//! load into a checkpoint, by the loaders' own rules ([`Adapter::plan`]).
//!
//! [`AdapterSummary::read`] lists every problem at once rather than stopping at the first, as a
//! loader does: half pairs, tensor names that are neither factors nor saved parameters, factors
//! whose ranks disagree with each other or with the config (`r`, or the `rank_pattern` entry the
//! loaders would choose: [`TargetSpec`](crate::target::TargetSpec)'s most specific pattern), and the
//! config's refused options. It also infers the config a module-name list would have:
//! `target_modules` (the adapted modules' last segments, in first-seen order) and
//! `rank_pattern` (a name whose layers all share a rank other than the most common one).
//! [`check_against_checkpoint`] then plans the adapter against a checkpoint in
//! [`LoadMode::Merge`]: the layers it will adapt, or the error a loader would give.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::path::segments_of;
use crate::peft::adapter::{Adapter, read_config, read_weights_header};
use crate::peft::checkpoint::checkpoint_layers;
use crate::peft::config::{ConfigProblem, LoraConfig};
use crate::peft::error::PeftError;
use crate::peft::layer::{LayerShape, LoadMode, PlannedFactors};
use crate::peft::names::{
    AdapterKey, DEFAULT_ADAPTER, Factor, FactorNaming, ends_with_segments, parameter_owner,
    parse_key,
};
use crate::target::Pattern;

/// One adapted module as the file holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptedModule {
    /// The module path, without PEFT's prefix.
    pub path: String,
    /// A linear's factors or an embedding's.
    pub naming: FactorNaming,
    /// `lora_A`'s shape, if present.
    pub a: Option<Vec<usize>>,
    /// `lora_B`'s shape, if present.
    pub b: Option<Vec<usize>>,
}

impl AdaptedModule {
    /// The rank the file gives: `lora_A`'s rows (for a fused bank, experts × rank).
    #[must_use]
    pub fn rank(&self) -> Option<usize> {
        self.a
            .as_ref()
            .and_then(|a| a.first().copied())
            .or_else(|| self.b.as_ref().and_then(|b| b.get(1).copied()))
    }
}

/// Something wrong with an adapter, found from its config and header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdapterProblem {
    /// One factor without the other.
    Unpaired {
        /// The module.
        path: String,
        /// The factor present.
        present: Factor,
    },
    /// A tensor name that is neither a factor nor a parameter.
    UnknownKey(String),
    /// `lora_A`'s rows and `lora_B`'s columns differ.
    RankMismatch {
        /// The module.
        path: String,
        /// `lora_A`'s rows.
        a: usize,
        /// `lora_B`'s columns.
        b: usize,
    },
    /// The file's rank is not the config's for the module.
    ConfigRank {
        /// The module.
        path: String,
        /// The file's rank.
        file: usize,
        /// The config's (`r` or a `rank_pattern` entry).
        config: usize,
    },
    /// A tensor that is not a float.
    NotFloat {
        /// The tensor.
        key: String,
        /// Its dtype.
        dtype: String,
    },
    /// The config is invalid or sets an option that is refused.
    Config(String),
}

impl fmt::Display for AdapterProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterProblem::Unpaired { path, present } => {
                let (has, lacks) = match present {
                    Factor::A => ("lora_A", "lora_B"),
                    Factor::B => ("lora_B", "lora_A"),
                };
                write!(f, "`{path}` has {has} but no {lacks}")
            }
            AdapterProblem::UnknownKey(key) => {
                write!(
                    f,
                    "tensor `{key}` is neither a LoRA factor nor a saved parameter"
                )
            }
            AdapterProblem::RankMismatch { path, a, b } => {
                write!(
                    f,
                    "`{path}`: lora_A has {a} rows but lora_B has {b} columns"
                )
            }
            AdapterProblem::ConfigRank { path, file, config } => write!(
                f,
                "`{path}` has rank {file} in the file but {config} in the config"
            ),
            AdapterProblem::NotFloat { key, dtype } => {
                write!(f, "tensor `{key}` is {dtype}, not a float")
            }
            AdapterProblem::Config(message) => f.write_str(message),
        }
    }
}

/// An adapter directory summarised from its config and header.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// The directory.
    pub dir: PathBuf,
    /// The config as read.
    pub config: LoraConfig,
    /// The adapted modules, sorted by path.
    pub modules: Vec<AdaptedModule>,
    /// The whole parameters the file holds (`modules_to_save`, embedding base copies), by name.
    pub parameters: Vec<String>,
    /// The module names a `target_modules` list would give: the adapted modules' last segments.
    pub target_modules: Vec<String>,
    /// The ranks a `rank_pattern` would give, by module name, where they differ from the most
    /// common rank (fused banks left out: their rank is per expert).
    pub rank_pattern: BTreeMap<String, usize>,
    /// Everything wrong, in the order found.
    pub problems: Vec<AdapterProblem>,
}

impl AdapterSummary {
    /// Reads `dir`'s `adapter_config.json` and the header of its `adapter_model.safetensors`.
    ///
    /// # Errors
    ///
    /// [`PeftError::Io`], [`PeftError::Config`] (not JSON or a field of the wrong type) and
    /// [`PeftError::Safetensors`] (an invalid header): what stops reading altogether. Everything
    /// else is in [`problems`](Self::problems).
    pub fn read(dir: impl AsRef<Path>) -> Result<AdapterSummary, PeftError> {
        let dir = dir.as_ref();
        let (_, config) = read_config(dir)?;
        let (_, header) = read_weights_header(dir)?;
        let mut problems = Vec::new();
        if let Err(problem) = config.validate() {
            problems.push(AdapterProblem::Config(match problem {
                ConfigProblem::Invalid(error) => error.to_string(),
                ConfigProblem::Refused(refusal) => format!(
                    "`{}` = {} is refused: {}",
                    refusal.option, refusal.value, refusal.reason
                ),
            }));
        }
        let mut modules: BTreeMap<String, AdaptedModule> = BTreeMap::new();
        let mut parameters = Vec::new();
        for tensor in &header.tensors {
            let shape: Vec<usize> = tensor
                .shape
                .iter()
                .map(|&axis| usize::try_from(axis).unwrap_or(usize::MAX))
                .collect();
            if !matches!(
                tensor.dtype,
                safetensors::Dtype::F16
                    | safetensors::Dtype::BF16
                    | safetensors::Dtype::F32
                    | safetensors::Dtype::F64
            ) {
                problems.push(AdapterProblem::NotFloat {
                    key: tensor.name.clone(),
                    dtype: tensor.dtype.to_string(),
                });
            }
            match parse_key(&tensor.name) {
                None => problems.push(AdapterProblem::UnknownKey(tensor.name.clone())),
                Some(AdapterKey::Parameter { .. }) => parameters.push(tensor.name.clone()),
                Some(AdapterKey::Factor(name)) => {
                    let module =
                        modules
                            .entry(name.path.to_owned())
                            .or_insert_with(|| AdaptedModule {
                                path: name.path.to_owned(),
                                naming: name.naming,
                                a: None,
                                b: None,
                            });
                    match name.factor {
                        Factor::A => module.a = Some(shape),
                        Factor::B => module.b = Some(shape),
                    }
                }
            }
        }
        let banks = bank_modules(&config);
        // The rank of a module by the config's own `rank_pattern`, as the loaders choose it (the
        // most specific pattern wins); `r` when the config does not parse.
        let spec = config.target_spec().ok();
        let config_rank = |path: &str| {
            let Some(spec) = &spec else {
                return config.r;
            };
            let segments = segments_of(path);
            Pattern::most_specific(&spec.rank_pattern, segments.len(), |pattern| {
                pattern.matches_path(&segments, path)
            })
            .map_or(config.r, |position| spec.rank_pattern[position].1 as usize)
        };
        for module in modules.values() {
            match (&module.a, &module.b) {
                (Some(a), Some(b)) => {
                    let (a_rank, b_rank) = (a.first().copied(), b.get(1).copied());
                    if let (Some(a_rank), Some(b_rank)) = (a_rank, b_rank)
                        && a_rank != b_rank
                    {
                        problems.push(AdapterProblem::RankMismatch {
                            path: module.path.clone(),
                            a: a_rank,
                            b: b_rank,
                        });
                    }
                }
                (Some(_), None) => problems.push(AdapterProblem::Unpaired {
                    path: module.path.clone(),
                    present: Factor::A,
                }),
                (None, _) => problems.push(AdapterProblem::Unpaired {
                    path: module.path.clone(),
                    present: Factor::B,
                }),
            }
            if let Some(file) = module.rank()
                && !is_bank(&module.path, &banks)
            {
                let config_rank = config_rank(&module.path);
                if file != config_rank {
                    problems.push(AdapterProblem::ConfigRank {
                        path: module.path.clone(),
                        file,
                        config: config_rank,
                    });
                }
            }
        }
        let modules: Vec<AdaptedModule> = modules.into_values().collect();
        let (target_modules, rank_pattern) = infer_names(&modules, &banks);
        Ok(AdapterSummary {
            dir: dir.to_owned(),
            config,
            modules,
            parameters,
            target_modules,
            rank_pattern,
            problems,
        })
    }
}

/// The modules whose parameters `target_parameters` adapts as fused banks (`mlp.experts` for
/// `mlp.experts.gate_up_proj`), as PEFT keys their factors. A bare parameter name
/// (`gate_up_proj`, as PEFT's `all-linear` writes them) gives no module: any `experts` module
/// stands for it. A module's own `weight` is no bank.
fn bank_modules(config: &LoraConfig) -> Vec<String> {
    let mut modules = Vec::new();
    for name in config.target_parameters.iter().flatten() {
        match name.rsplit_once('.') {
            Some((_, "weight")) => {}
            Some((module, _)) => modules.push(module.to_owned()),
            None => modules.push("experts".to_owned()),
        }
    }
    modules.dedup();
    modules
}

/// Whether the factors at `path` adapt one of `banks` (see [`bank_modules`]).
fn is_bank(path: &str, banks: &[String]) -> bool {
    banks
        .iter()
        .any(|bank| ends_with_segments(parameter_owner(path).0, bank))
}

/// `target_modules` and `rank_pattern` as a module-name list would give them.
fn infer_names(
    modules: &[AdaptedModule],
    banks: &[String],
) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut names: Vec<String> = Vec::new();
    let mut ranks: HashMap<String, Vec<usize>> = HashMap::new();
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for module in modules {
        if is_bank(&module.path, banks) {
            continue;
        }
        let name = module.path.rsplit('.').next().unwrap_or(&module.path);
        if !names.iter().any(|seen| seen == name) {
            names.push(name.to_owned());
        }
        if let Some(rank) = module.rank() {
            ranks.entry(name.to_owned()).or_default().push(rank);
            *counts.entry(rank).or_default() += 1;
        }
    }
    let common = counts
        .iter()
        .max_by_key(|(rank, count)| (**count, core::cmp::Reverse(**rank)))
        .map(|(rank, _)| *rank);
    let pattern = ranks
        .into_iter()
        .filter_map(|(name, ranks)| {
            let first = *ranks.first()?;
            (ranks.iter().all(|&rank| rank == first) && Some(first) != common)
                .then_some((name, first))
        })
        .collect();
    (names, pattern)
}

/// One layer an adapter would adapt, as the plan checked it.
#[derive(Clone, Debug, PartialEq)]
pub struct WouldAdapt {
    /// The layer's path.
    pub path: String,
    /// Its rank.
    pub rank: u32,
    /// Its alpha.
    pub alpha: f64,
    /// The scale of `B A`.
    pub scale: f64,
}

/// Plans the adapter in `dir` (config and header only) against `checkpoint` in
/// [`LoadMode::Merge`]: the layers it would adapt, in walk order, and how many of them have a
/// shape the checkpoint could not tell (their shard is absent: the adapter's own factor shapes
/// stand in, so those shapes are not checked). An adapter of fused expert banks
/// (`target_parameters`) against a checkpoint that keeps its experts per expert is planned
/// against the banks transformers 5 fuses from it, as [`merge`](crate::peft::merge) does; its
/// banks are then named as transformers 5 names them (`mlp.experts.gate_up_proj`).
///
/// # Errors
///
/// The first error a loader would give ([`Adapter::plan`]).
pub fn check_against_checkpoint(
    dir: impl AsRef<Path>,
    checkpoint: &Checkpoint,
) -> Result<(Vec<WouldAdapt>, usize), PeftError> {
    let adapter = Adapter::read_header(dir)?;
    // An adapter of fused expert banks against a per-expert checkpoint is planned against the
    // banks transformers 5 would fuse from it, as `merge` splits it.
    let banks = adapter
        .config
        .target_parameters
        .as_ref()
        .is_some_and(|parameters| !parameters.is_empty());
    let view = if banks {
        crate::peft::fused_view::fused_view(checkpoint)?
    } else {
        None
    };
    let checkpoint = view.as_ref().map_or(checkpoint, |(view, _)| view);
    let mut layers = checkpoint_layers(checkpoint);
    // A layer of an absent shard has no shape: its factors' shapes stand in.
    let mut unchecked = 0;
    let factor_shapes = factor_shapes(&adapter);
    let absent: std::collections::HashSet<&str> = checkpoint
        .tensors()
        .iter()
        .filter(|tensor| tensor.layout.is_none())
        .map(|tensor| tensor.name.as_str())
        .collect();
    for (path, layer) in &mut layers {
        let weight = format!("{path}.weight");
        if layer.shape != LayerShape::Other
            || !(absent.contains(weight.as_str()) || absent.contains(path.as_str()))
        {
            continue;
        }
        if let Some(shape) = factor_shapes.get(path.as_str()) {
            layer.shape = *shape;
            unchecked += 1;
        }
    }
    let plan = adapter.plan(checkpoint, &layers, LoadMode::Merge, DEFAULT_ADAPTER)?;
    let adapted = plan
        .factors
        .iter()
        .map(|factors: &PlannedFactors<'_>| WouldAdapt {
            path: factors.path.clone(),
            rank: factors.rank,
            alpha: factors.alpha,
            scale: factors.scale,
        })
        .collect();
    Ok((adapted, unchecked))
}

/// The layer shape each factor pair implies, by module path.
fn factor_shapes(adapter: &Adapter) -> HashMap<&str, LayerShape> {
    /// A module's naming and the shapes of its `lora_A` and `lora_B`.
    type Halves<'s> = (FactorNaming, Option<&'s [usize]>, Option<&'s [usize]>);
    let mut halves: HashMap<&str, Halves<'_>> = HashMap::new();
    for (key, tensor) in adapter.tensors() {
        let Some(AdapterKey::Factor(name)) = parse_key(key) else {
            continue;
        };
        let entry = halves.entry(name.path).or_insert((name.naming, None, None));
        match name.factor {
            Factor::A => entry.1 = Some(&tensor.shape),
            Factor::B => entry.2 = Some(&tensor.shape),
        }
    }
    halves
        .into_iter()
        .filter_map(|(path, (naming, a, b))| {
            let (&cols, &rows) = (a?.get(1)?, b?.first()?);
            let shape = match naming {
                FactorNaming::Linear => LayerShape::Linear {
                    in_features: cols,
                    out_features: rows,
                    bias: false,
                },
                FactorNaming::Embedding => LayerShape::Embedding {
                    num_embeddings: cols,
                    embedding_dim: rows,
                },
            };
            Some((path, shape))
        })
        .collect()
}
