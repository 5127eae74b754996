//! Fused expert banks (transformers 5 layout) saved as per-expert adapters (transformers 4
//! layout), for PEFT on transformers 4: the names each layout gives the experts' projections
//! ([`PerExpertNames`]), and [`Adapter::to_per_expert`], the exact split that candle's and burn's
//! `save_peft_adapter_per_expert` write. The other way, per-expert files loaded into banks, is
//! `convert`.

use std::collections::{BTreeMap, HashMap};

use crate::peft::adapter::{Adapter, RawTensor};
use crate::peft::config::TargetModules;
use crate::peft::convert::{matrix, parent};
use crate::peft::error::PeftError;
use crate::peft::layer::{LayerInfo, LayerShape};
use crate::peft::names::{AdapterKey, Factor, FactorNaming, parameter_owner, parse_key};

/// The names a transformers 4 checkpoint gives each routed expert's projections, and the name of
/// the block holding `experts` where it differs from the model's (Mixtral's checkpoints say
/// `block_sparse_moe` where transformers 5 says `mlp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerExpertNames {
    /// The block's name in per-expert keys, if it is not the model's.
    pub block: Option<&'static str>,
    /// The gate projection (the first half of `gate_up_proj`).
    pub gate: &'static str,
    /// The up projection (the second half of `gate_up_proj`).
    pub up: &'static str,
    /// The down projection (`down_proj`).
    pub down: &'static str,
}

impl PerExpertNames {
    /// Mixtral: `block_sparse_moe.experts.K.w1` / `w3` / `w2`.
    pub const MIXTRAL: PerExpertNames = PerExpertNames {
        block: Some("block_sparse_moe"),
        gate: "w1",
        up: "w3",
        down: "w2",
    };
    /// Qwen2-MoE, DeepSeek and most others: `mlp.experts.K.gate_proj` / `up_proj` / `down_proj`.
    pub const GATE_UP_DOWN: PerExpertNames = PerExpertNames {
        block: None,
        gate: "gate_proj",
        up: "up_proj",
        down: "down_proj",
    };
}

/// Saves `model`'s adapters with `save` into a scratch directory, splits every fused bank into
/// per-expert factors under `names` ([`Adapter::to_per_expert`]), and writes the result to
/// `dir`: the one path of candle's and burn's `save_peft_adapter_per_expert`.
#[cfg(any(feature = "candle", feature = "burn"))]
pub(crate) fn save_per_expert<M: crate::tree::ModuleTree + ?Sized>(
    model: &M,
    layers: &HashMap<String, LayerInfo>,
    dir: &std::path::Path,
    names: PerExpertNames,
    save: impl FnOnce(&std::path::Path) -> Result<Vec<crate::peft::AdaptedLayer>, PeftError>,
) -> Result<(), PeftError> {
    let scratch = tempfile::tempdir().map_err(|source| PeftError::Io {
        file: std::env::temp_dir(),
        source,
    })?;
    save(scratch.path())?;
    let fused = Adapter::read(scratch.path())?;
    fused.to_per_expert(model, layers, names)?.write(dir)
}

impl Adapter {
    /// The adapter with the factors of every fused expert bank of `model` (whose layers `layers`
    /// describes) split into per-expert factors under transformers 4's names: what PEFT on
    /// transformers 4 loads. Exact: each projection of each expert gets the bank's `A_e` whole
    /// and its rows of `B_e`, at the bank's rank and scale (see
    /// [`split`](crate::peft::experts::split)). `gate_up_proj` banks split into `names.gate`
    /// and `names.up`, `down_proj` banks into `names.down`; `target_parameters` become
    /// `target_modules` names: `experts.K.<name>` for each expert `K` of a bank (a suffix that
    /// selects routed experts only, not a shared expert's or a dense MLP's projection of the same
    /// name), and the module itself for a module's weight (`gate.weight` becomes `gate`).
    ///
    /// # Errors
    ///
    /// The errors of [`Adapter::plan`] (the adapter must fit `model`), [`PeftError::NotAdaptable`]
    /// for a bank named neither `gate_up_proj` nor `down_proj`, and those of [`Adapter::new`].
    pub fn to_per_expert<M: crate::tree::ModuleTree + ?Sized>(
        &self,
        model: &M,
        layers: &HashMap<String, LayerInfo>,
        names: PerExpertNames,
    ) -> Result<Adapter, PeftError> {
        // Only the shapes matter: the model may hold the very adapters being split, or share
        // layers behind an `Arc`.
        let shapes: HashMap<String, LayerInfo> = layers
            .iter()
            .map(|(path, info)| {
                let attachment = crate::peft::Attachment::InPlace(false);
                (
                    path.clone(),
                    LayerInfo {
                        attachment,
                        ..info.clone()
                    },
                )
            })
            .collect();
        let plan = self.plan(
            model,
            &shapes,
            crate::peft::LoadMode::Merge,
            crate::peft::DEFAULT_ADAPTER,
        )?;
        let mut config = self.config.clone();
        let mut tensors: BTreeMap<String, RawTensor> = BTreeMap::new();
        let mut split_modules: Vec<String> = Vec::new();
        let mut renamed_blocks: Vec<(String, String)> = Vec::new();
        let mut new_targets: Vec<String> = Vec::new();
        for planned in &plan.factors {
            let Some(LayerShape::Bank {
                experts,
                out_features,
                ..
            }) = layers.get(&planned.path).map(|info| info.shape)
            else {
                continue;
            };
            let bank_name = planned.path.rsplit('.').next().unwrap_or_default();
            let (parts, widths): (Vec<&str>, Vec<usize>) = match bank_name {
                "gate_up_proj" => (
                    vec![names.gate, names.up],
                    vec![out_features / 2, out_features / 2],
                ),
                "down_proj" => (vec![names.down], vec![out_features]),
                _ => {
                    return Err(PeftError::NotAdaptable {
                        key: planned.path.clone(),
                        path: planned.path.clone(),
                        type_name: "ExpertBank",
                        what: "is neither `gate_up_proj` nor `down_proj`, so its per-expert names are unknown",
                    });
                }
            };
            let fused = crate::peft::experts::FusedFactors {
                experts,
                rank: usize::try_from(planned.rank).unwrap_or(usize::MAX),
                a: matrix(planned.a, &planned.path)?,
                b: matrix(planned.b, &planned.path)?,
                scale: planned.scale,
            };
            let per_expert = crate::peft::experts::split(&fused, &widths).map_err(|error| {
                PeftError::Tensor {
                    path: planned.path.clone(),
                    message: error.to_string(),
                }
            })?;
            let owner = parent(&planned.path);
            let block = parent(owner);
            if owner.rsplit('.').next() != Some("experts") || block.is_empty() {
                return Err(PeftError::NotAdaptable {
                    key: planned.path.clone(),
                    path: planned.path.clone(),
                    type_name: "ExpertBank",
                    what: "sits under no `<block>.experts` module, so transformers 4 has no per-expert names for it",
                });
            }
            let block = match names.block {
                Some(name) => format!("{}.{name}", parent(block)),
                None => block.to_owned(),
            };
            for (expert, projections) in per_expert.iter().enumerate() {
                for (factors, name) in projections.iter().zip(&parts) {
                    let path = format!("{block}.experts.{expert}.{name}");
                    for (factor, values) in [(Factor::A, &factors.a), (Factor::B, &factors.b)] {
                        let key = crate::peft::names::FactorName {
                            path: &path,
                            factor,
                            naming: FactorNaming::Linear,
                        };
                        tensors.insert(
                            key.to_peft(),
                            RawTensor::from_f32(vec![values.rows, values.cols], &values.values),
                        );
                    }
                    // The bank's rank and alpha for its per-expert projections, where they are
                    // not the defaults.
                    let (rank, alpha) = (planned.rank, planned.alpha);
                    if rank as usize != config.r || alpha.to_bits() != config.lora_alpha.to_bits() {
                        config.rank_pattern.insert(path.clone(), rank as usize);
                        config.alpha_pattern.insert(path.clone(), alpha);
                    }
                }
            }
            // Each expert's projections by a suffix that names the expert (`experts.3.w1`): a
            // bare `w1` or `down_proj` would select a shared expert's or a dense MLP's linear of
            // that name too, which the split adapter has no factors for.
            for expert in 0..experts {
                for name in &parts {
                    new_targets.push(format!("experts.{expert}.{name}"));
                }
            }
            config.rank_pattern.remove(&planned.path);
            config.alpha_pattern.remove(&planned.path);
            split_modules.push(owner.to_owned());
            // The rest of the block (its router) moves under transformers 4's block name too.
            let fused_block = parent(owner);
            if fused_block != block && !renamed_blocks.iter().any(|(from, _)| from == fused_block) {
                renamed_blocks.push((fused_block.to_owned(), block.clone()));
            }
        }
        for (key, tensor) in &self.tensors {
            let from_bank = match parse_key(key) {
                Some(AdapterKey::Factor(name)) => {
                    let (module, _) = parameter_owner(name.path);
                    split_modules.iter().any(|owner| owner == module)
                }
                _ => false,
            };
            if !from_bank {
                tensors.insert(rename_block(key, &renamed_blocks), tensor.clone());
            }
        }
        // A parameter named with its module (`gate.weight`, a router's weight) is that module's
        // whole weight: a linear adapted in place, which `target_modules` names.
        let owners: Vec<String> = config
            .target_parameters
            .take()
            .unwrap_or_default()
            .iter()
            .filter_map(|entry| {
                [".weight", ".bias"]
                    .iter()
                    .find_map(|parameter| entry.strip_suffix(parameter))
                    .map(|owner| rename_block_segment(owner, &renamed_blocks))
            })
            .collect();
        // PEFT adapts `target_parameters` whatever `layers_to_transform` and `exclude_modules`
        // say, but applies both to `target_modules`, where the split banks now are; nor can
        // names be added to a regex. Then the linears the adapter adapts are listed by their
        // full paths, and the filters, now spent, dropped: the same layers, in PEFT's terms.
        let filtered = config.layers_to_transform.is_some() || config.exclude_modules.is_some();
        let regex = matches!(config.target_modules, Some(TargetModules::Regex(_)));
        let bake =
            (!split_modules.is_empty() && (filtered || regex)) || (regex && !owners.is_empty());
        let mut targets = if bake {
            config.layers_to_transform = None;
            config.layers_pattern = None;
            config.exclude_modules = None;
            config.target_modules = None;
            plan.factors
                .iter()
                .filter(|planned| {
                    !matches!(
                        layers.get(&planned.path).map(|info| info.shape),
                        Some(LayerShape::Bank { .. })
                    )
                })
                .map(|planned| rename_block(&planned.path, &renamed_blocks))
                .collect()
        } else {
            new_targets.extend(owners);
            match config.target_modules.take() {
                Some(TargetModules::List(list)) => list,
                // Nothing to add (no bank was split, no weight named): the regex stands.
                Some(TargetModules::Regex(regex)) => {
                    config.target_modules = Some(TargetModules::Regex(regex));
                    return Adapter::new(config, tensors, self.config_file.clone());
                }
                None => Vec::new(),
            }
        };
        let mut listed: std::collections::HashSet<String> = targets.iter().cloned().collect();
        for name in new_targets {
            if listed.insert(name.clone()) {
                targets.push(name);
            }
        }
        config.target_modules = Some(TargetModules::List(targets));
        Adapter::new(config, tensors, self.config_file.clone())
    }
}

/// `key` with the first of `renames` whose fused block path it holds, on segment boundaries,
/// replaced by the per-expert block path (`model.layers.0.mlp.gate` to
/// `model.layers.0.block_sparse_moe.gate`).
fn rename_block(key: &str, renames: &[(String, String)]) -> String {
    for (from, to) in renames {
        let mut start = 0;
        while let Some(found) = key[start..].find(from.as_str()) {
            let at = start + found;
            let end = at + from.len();
            let bounded = (at == 0 || key[..at].ends_with('.')) && key[end..].starts_with('.');
            if bounded {
                return format!("{}{to}{}", &key[..at], &key[end..]);
            }
            start = at + 1;
        }
    }
    key.to_owned()
}

/// A `target_modules` entry (a path suffix such as `mlp.gate`) with the fused block's segment
/// renamed as [`rename_block`] renames whole paths (`block_sparse_moe.gate`).
fn rename_block_segment(entry: &str, renames: &[(String, String)]) -> String {
    let last = |path: &str| path.rsplit('.').next().unwrap_or(path).to_owned();
    let segments: Vec<String> = entry
        .split('.')
        .map(|segment| {
            renames
                .iter()
                .find(|(from, _)| last(from) == segment)
                .map_or_else(|| segment.to_owned(), |(_, to)| last(to))
        })
        .collect();
    segments.join(".")
}
