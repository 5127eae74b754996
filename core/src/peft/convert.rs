//! Per-expert adapters (transformers 4 layout) loaded into fused expert banks (transformers 5
//! layout): the adapter is rewritten, in memory and exactly, into `target_parameters` factors of
//! the model's banks before it is planned, so every rule of the plan still applies.
//!
//! A factor pair for `<prefix>.experts.<e>.<projection>` whose path is no layer of the model is
//! per-expert when the model has banks under `<prefix>.experts` (or under a sibling of
//! `<prefix>`: Mixtral's checkpoints say `block_sparse_moe` where transformers 5 says `mlp`).
//! Each projection goes to the bank of its name (the names of [`PerExpertNames`]): `gate_proj` /
//! `w1` to the first half of `gate_up_proj` `[E, 2·out, in]`, `up_proj` / `w3` to its second
//! half, `down_proj` / `w2` to `down_proj` `[E, out, in]`, any other name to the bank of that
//! name; its widths must then fit the bank. The fused factors come from
//! [`fuse`]: each expert's own rank and scale are kept exactly (rsLoRA and rank patterns
//! included), and the bank gets a rank and alpha of its own in `rank_pattern` /
//! `alpha_pattern`. An expert the file has no factors for gets none (a zero delta), as in PEFT.
//! Anything that cannot be placed is refused with the reason; nothing lands elsewhere. The other
//! way, fused banks saved under per-expert keys, is `per_expert`.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::peft::adapter::{Adapter, RawTensor};
use crate::peft::config::TargetModules;
use crate::peft::error::PeftError;
use crate::peft::experts::{ExpertFactors, Matrix, fuse};
use crate::peft::layer::{LayerInfo, LayerShape};
use crate::peft::names::{AdapterKey, Factor, FactorNaming, ends_with_segments, parse_key};
use crate::peft::per_expert::PerExpertNames;

/// The per-expert naming schemes a file may use.
const KNOWN_NAMES: [PerExpertNames; 2] = [PerExpertNames::MIXTRAL, PerExpertNames::GATE_UP_DOWN];

/// A fused bank of the model: its path, expert count and the widths of one expert.
#[derive(Clone, Copy)]
struct BankInfo<'b> {
    path: &'b str,
    experts: usize,
    in_features: usize,
    out_features: usize,
}

/// Per expert, per part of a bank, the factors found (or none).
type ExpertSlots = Vec<Vec<Option<ExpertFactors>>>;

/// One per-expert pair, parsed.
struct PerExpert<'a> {
    path: &'a str,
    /// The key of its `lora_A`, for errors.
    a_key: &'a str,
    prefix: &'a str,
    expert: usize,
    projection: &'a str,
    a: &'a RawTensor,
    b: &'a RawTensor,
}

impl Adapter {
    /// The adapter with its per-expert factors fused for the banks `layers` describes, or `None`
    /// when the file has none to fuse: per-expert factors go to the bank of their widths, exactly
    /// (`fuse`), and a bank gets its own rank and alpha in `rank_pattern` / `alpha_pattern`.
    ///
    /// # Errors
    ///
    /// [`PeftError::NotAdaptable`] for a per-expert projection no bank of the model takes (the
    /// message says why); [`PeftError::Dtype`] for factors that are not floats; the errors of
    /// [`Adapter::new`] for the rewritten config.
    pub fn fused_for(
        &self,
        layers: &HashMap<String, LayerInfo>,
    ) -> Result<Option<Adapter>, PeftError> {
        let mut banks: Vec<BankInfo<'_>> = layers
            .iter()
            .filter_map(|(path, info)| match info.shape {
                LayerShape::Bank {
                    experts,
                    in_features,
                    out_features,
                } => Some(BankInfo {
                    path: path.as_str(),
                    experts,
                    in_features,
                    out_features,
                }),
                _ => None,
            })
            .collect();
        banks.sort_unstable_by_key(|bank| bank.path);
        if banks.is_empty() {
            return Ok(None);
        }
        let per_expert = self.per_expert_pairs(layers)?;
        if per_expert.is_empty() {
            return Ok(None);
        }
        // Bank path → experts → parts (one, or gate then up).
        let mut grouped: BTreeMap<&str, (usize, ExpertSlots)> = BTreeMap::new();
        let mut converted: HashSet<&str> = HashSet::new();
        for pair in &per_expert {
            let place = |what: &'static str| PeftError::NotAdaptable {
                key: pair.path.to_owned(),
                path: pair.path.to_owned(),
                type_name: "per-expert linear",
                what,
            };
            let (a, b) = (matrix(pair.a, pair.path)?, matrix(pair.b, pair.path)?);
            let owner = bank_owner(pair.prefix, &banks).ok_or_else(|| {
                place("has no bank of fused experts beside it in the model to go into")
            })?;
            let (bank, part, parts) = bank_for(owner, pair.projection, &banks).ok_or_else(|| {
                place("has no bank of its name (`gate_up_proj` for gate and up, `down_proj` for down) beside it")
            })?;
            if a.cols != bank.in_features || b.rows.checked_mul(parts) != Some(bank.out_features) {
                return Err(place("does not fit its bank by its widths"));
            }
            if pair.expert >= bank.experts {
                return Err(place("names an expert the bank does not have"));
            }
            if let Some(option) = self.spec.left_out_path(pair.path) {
                return Err(PeftError::NotSelected {
                    key: pair.a_key.to_owned(),
                    path: pair.path.to_owned(),
                    option,
                });
            }
            let (rank, alpha) = self.spec.rank_and_alpha_for(pair.path);
            if usize::try_from(rank).ok() != Some(a.rows) || b.cols != a.rows {
                return Err(PeftError::Rank {
                    key: pair.a_key.to_owned(),
                    path: pair.path.to_owned(),
                    expected: rank,
                    found: a.rows,
                });
            }
            let (bank, experts) = (bank.path, bank.experts);
            let entry = grouped
                .entry(bank)
                .or_insert_with(|| (parts, vec![vec![None; parts]; experts]));
            entry.1[pair.expert][part] = Some(ExpertFactors {
                a,
                b,
                scale: self.config.scale(rank, alpha),
            });
            converted.insert(pair.path);
        }
        let mut config = self.config.clone();
        let mut tensors: BTreeMap<String, RawTensor> = self
            .tensors
            .iter()
            .filter(|(key, _)| {
                !matches!(parse_key(key), Some(AdapterKey::Factor(name)) if converted.contains(name.path))
            })
            .map(|(key, tensor)| (key.clone(), tensor.clone()))
            .collect();
        for (bank, (parts, experts)) in grouped {
            let info = layers.get(bank).map(|info| info.shape);
            let Some(LayerShape::Bank {
                in_features,
                out_features,
                ..
            }) = info
            else {
                continue;
            };
            let part_out = out_features / parts;
            let filled: Vec<Vec<ExpertFactors>> = experts
                .into_iter()
                .map(|projections| {
                    projections
                        .into_iter()
                        .map(|factors| {
                            factors.unwrap_or(ExpertFactors {
                                a: Matrix::zeros(0, in_features),
                                b: Matrix::zeros(part_out, 0),
                                scale: 1.0,
                            })
                        })
                        .collect()
                })
                .collect();
            let fused = fuse(&filled, 1.0).map_err(|error| PeftError::Tensor {
                path: bank.to_owned(),
                message: error.to_string(),
            })?;
            // Scale 1: alpha = r, or √r with rsLoRA.
            let alpha = crate::peft::alpha_for(
                1.0,
                u32::try_from(fused.rank).unwrap_or(u32::MAX),
                config.use_rslora,
            );
            config.rank_pattern.insert(bank.to_owned(), fused.rank);
            config.alpha_pattern.insert(bank.to_owned(), alpha);
            config
                .target_parameters
                .get_or_insert_with(Vec::new)
                .push(bank.to_owned());
            for (factor, values) in [(Factor::A, &fused.a), (Factor::B, &fused.b)] {
                let name = crate::peft::names::FactorName {
                    path: bank,
                    factor,
                    naming: FactorNaming::Linear,
                };
                let key = name.to_peft();
                if tensors.contains_key(&key) {
                    return Err(PeftError::Conflict {
                        path: bank.to_owned(),
                        first: key,
                        second: format!("the per-expert factors under {bank}'s experts"),
                    });
                }
                tensors.insert(
                    key,
                    RawTensor::from_f32(vec![values.rows, values.cols], &values.values),
                );
            }
        }
        // `target_modules` entries and rank/alpha keys that named only converted projections
        // would now match nothing: they go, their effect kept in the fused factors.
        let factor_paths: HashSet<&str> = self
            .tensors
            .keys()
            .filter_map(|key| match parse_key(key) {
                Some(AdapterKey::Factor(name)) => Some(name.path),
                _ => None,
            })
            .collect();
        let only_converted = |entry: &str| {
            let mut hits = factor_paths
                .iter()
                .filter(|path| ends_with_segments(path, entry))
                .peekable();
            hits.peek().is_some() && hits.all(|path| converted.contains(path))
        };
        if let Some(TargetModules::List(names)) = &mut config.target_modules {
            names.retain(|name| !only_converted(name));
            if names.is_empty() {
                config.target_modules = None;
            }
        }
        config
            .rank_pattern
            .retain(|key, _| layers.contains_key(key) || !only_converted(key));
        config
            .alpha_pattern
            .retain(|key, _| layers.contains_key(key) || !only_converted(key));
        Adapter::new(config, tensors, self.config_file.clone()).map(Some)
    }

    /// The factor pairs of the file for `<prefix>.experts.<e>.<projection>` paths that are no
    /// layer of the model (`<e>` written as an index: digits without a leading zero).
    ///
    /// # Errors
    ///
    /// [`PeftError::Conflict`] for a half given twice (with and without PEFT's prefix, say);
    /// [`PeftError::Unpaired`] for a half without the other.
    fn per_expert_pairs(
        &self,
        layers: &HashMap<String, LayerInfo>,
    ) -> Result<Vec<PerExpert<'_>>, PeftError> {
        type Half<'t> = Option<(&'t str, &'t RawTensor)>;
        type Parts<'t> = (&'t str, usize, &'t str);
        let mut halves: BTreeMap<&str, (Parts<'_>, Half<'_>, Half<'_>)> = BTreeMap::new();
        for (key, tensor) in &self.tensors {
            if let Some(AdapterKey::Factor(name)) = parse_key(key)
                && name.naming == FactorNaming::Linear
                && !layers.contains_key(name.path)
                && let Some(parts) = per_expert_parts(name.path)
            {
                let entry = halves.entry(name.path).or_insert((parts, None, None));
                let half = match name.factor {
                    Factor::A => &mut entry.1,
                    Factor::B => &mut entry.2,
                };
                if let Some((first, _)) = half {
                    return Err(PeftError::Conflict {
                        path: name.path.to_owned(),
                        first: (*first).to_owned(),
                        second: key.clone(),
                    });
                }
                *half = Some((key.as_str(), tensor));
            }
        }
        halves
            .into_iter()
            .map(|(path, ((prefix, expert, projection), a, b))| {
                let (Some((a_key, a)), Some((_, b))) = (a, b) else {
                    let present = a.or(b).map_or(path, |(key, _)| key);
                    return Err(PeftError::Unpaired {
                        path: path.to_owned(),
                        present: present.to_owned(),
                        missing: crate::peft::names::other_half(present),
                    });
                };
                Ok(PerExpert {
                    path,
                    a_key,
                    prefix,
                    expert,
                    projection,
                    a,
                    b,
                })
            })
            .collect()
    }
}

/// `<prefix>.experts.<e>.<projection>` split into its prefix, expert index and projection name;
/// `None` for any other path, or an index with a leading zero (tensor names are not indices).
fn per_expert_parts(path: &str) -> Option<(&str, usize, &str)> {
    let (head, projection) = path.rsplit_once('.')?;
    let (head, expert) = head.rsplit_once('.')?;
    let (prefix, experts) = head.rsplit_once('.')?;
    let canonical = crate::path::is_index(expert) && (expert == "0" || !expert.starts_with('0'));
    let expert = expert.parse().ok().filter(|_| canonical)?;
    (experts == "experts").then_some((prefix, expert, projection))
}

/// The module owning `path` (everything before its last segment).
pub(super) fn parent(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(head, _)| head)
}

/// The `…experts` module whose banks take `prefix.experts.<e>.*`: `prefix.experts` itself, or
/// the one `experts` module under a sibling of `prefix`.
fn bank_owner<'b>(prefix: &str, banks: &[BankInfo<'b>]) -> Option<&'b str> {
    let owners = || banks.iter().map(|bank| parent(bank.path));
    if let Some(owner) = owners().find(|owner| {
        owner
            .strip_prefix(prefix)
            .is_some_and(|rest| rest == ".experts")
    }) {
        return Some(owner);
    }
    let grandparent = parent(prefix);
    let mut siblings = owners()
        .filter(|owner| owner.ends_with(".experts") && parent(parent(owner)) == grandparent);
    let first = siblings.next()?;
    // `banks` is sorted, so the banks of one owner are adjacent.
    siblings.all(|owner| owner == first).then_some(first)
}

/// The bank under `owner` that the per-expert `projection` goes to, by name, with the part it
/// fills and the bank's number of parts: a gate or up projection fills one half of
/// `gate_up_proj`, a down projection fills `down_proj`, any other fills the bank of its name.
fn bank_for<'a, 'b>(
    owner: &str,
    projection: &str,
    banks: &'a [BankInfo<'b>],
) -> Option<(&'a BankInfo<'b>, usize, usize)> {
    let half = KNOWN_NAMES.iter().find_map(|names| {
        (names.gate == projection)
            .then_some(0)
            .or((names.up == projection).then_some(1))
    });
    let (name, part, parts) = match half {
        Some(half) => ("gate_up_proj", half, 2),
        None if KNOWN_NAMES.iter().any(|names| names.down == projection) => ("down_proj", 0, 1),
        None => (projection, 0, 1),
    };
    banks
        .iter()
        .find(|bank| bank.path.rsplit_once('.') == Some((owner, name)))
        .map(|bank| (bank, part, parts))
}

/// A stored 2-D float tensor as an `f32` matrix.
pub(super) fn matrix(raw: &RawTensor, path: &str) -> Result<Matrix, PeftError> {
    let [rows, cols] = raw.shape.as_slice() else {
        return Err(PeftError::Tensor {
            path: path.to_owned(),
            message: format!("a factor of shape {:?} is not a matrix", raw.shape),
        });
    };
    Ok(Matrix {
        rows: *rows,
        cols: *cols,
        values: raw.to_f32_vec(path)?,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::peft::config::LoraConfig;
    use crate::peft::layer::Attachment;

    fn bank(experts: usize, in_features: usize, out_features: usize) -> LayerInfo {
        LayerInfo {
            type_name: "ExpertBank",
            shape: LayerShape::Bank {
                experts,
                in_features,
                out_features,
            },
            attachment: Attachment::Plain { slot: "ExpertBank" },
        }
    }

    fn factor(path: &str, half: &str, shape: [usize; 2], seed: f32) -> (String, RawTensor) {
        let values: Vec<f32> = (0..shape[0] * shape[1])
            .map(|i| (i as f32).mul_add(0.37, seed).sin())
            .collect();
        (
            format!("base_model.model.{path}.lora_{half}.weight"),
            RawTensor::from_f32(shape.to_vec(), &values),
        )
    }

    /// With the hidden size equal to the intermediate size, a gate projection fits `down_proj`
    /// by its widths too: it must still go to its half of `gate_up_proj`, whatever the order of
    /// the layer map.
    #[test]
    fn projections_go_to_the_bank_of_their_name_when_widths_are_ambiguous() {
        let (width, rank) = (4, 2);
        let layers: HashMap<String, LayerInfo> = [
            (
                "mlp.experts.gate_up_proj".to_owned(),
                bank(2, width, 2 * width),
            ),
            ("mlp.experts.down_proj".to_owned(), bank(2, width, width)),
        ]
        .into();
        let mut tensors = BTreeMap::new();
        for (seed, projection) in ["gate_proj", "up_proj", "down_proj"].iter().enumerate() {
            let path = format!("mlp.experts.1.{projection}");
            let seed = seed as f32;
            tensors.extend([
                factor(&path, "A", [rank, width], seed),
                factor(&path, "B", [width, rank], seed + 0.5),
            ]);
        }
        let config =
            LoraConfig::new(rank, 4.0).with_target_modules(["gate_proj", "up_proj", "down_proj"]);
        let adapter = Adapter::new(config, tensors, PathBuf::from("adapter_config.json")).unwrap();
        let fused = adapter.fused_for(&layers).unwrap().unwrap();
        let config = &fused.config;
        assert_eq!(
            config.rank_pattern.get("mlp.experts.gate_up_proj"),
            Some(&(2 * rank)),
            "gate and up stack their ranks in gate_up_proj"
        );
        assert_eq!(
            config.rank_pattern.get("mlp.experts.down_proj"),
            Some(&rank),
            "down alone in down_proj"
        );
        let a_key = "base_model.model.mlp.experts.gate_up_proj.lora_A.weight";
        assert_eq!(fused.tensors[a_key].shape, vec![2 * 2 * rank, width]);
    }

    #[test]
    fn a_factor_whose_bytes_do_not_fill_its_shape_is_refused() {
        let layers: HashMap<String, LayerInfo> =
            [("mlp.experts.down_proj".to_owned(), bank(2, 4, 4))].into();
        let path = "mlp.experts.0.down_proj";
        let mut tensors: BTreeMap<String, RawTensor> = [
            factor(path, "A", [2, 4], 0.0),
            factor(path, "B", [4, 2], 1.0),
        ]
        .into();
        let (key, short) = factor(path, "B", [1, 2], 1.0);
        tensors.insert(
            key,
            RawTensor::new(safetensors::Dtype::F32, vec![4, 2], short.data().to_vec()),
        );
        let config = LoraConfig::new(2, 4.0).with_target_modules(["down_proj"]);
        let adapter = Adapter::new(config, tensors, PathBuf::from("adapter_config.json")).unwrap();
        let error = adapter.fused_for(&layers).unwrap_err();
        assert!(
            matches!(&error, PeftError::Tensor { path: at, message } if at == path && message.contains("holds 8 bytes")),
            "{error}"
        );
    }

    /// A per-expert file for one `down_proj` bank of two experts, with `edit` applied to its
    /// tensors and `config` as the config; what `fused_for` makes of it.
    fn fuse_edited(
        config: LoraConfig,
        edit: impl FnOnce(&mut BTreeMap<String, RawTensor>),
    ) -> Result<Option<Adapter>, PeftError> {
        let layers: HashMap<String, LayerInfo> =
            [("mlp.experts.down_proj".to_owned(), bank(2, 4, 4))].into();
        let mut tensors = BTreeMap::new();
        for expert in 0..2 {
            let path = format!("mlp.experts.{expert}.down_proj");
            tensors.extend([
                factor(&path, "A", [2, 4], 0.0),
                factor(&path, "B", [4, 2], 1.0),
            ]);
        }
        edit(&mut tensors);
        let adapter = Adapter::new(config, tensors, PathBuf::from("adapter_config.json"))?;
        adapter.fused_for(&layers)
    }

    fn down_config() -> LoraConfig {
        LoraConfig::new(2, 4.0).with_target_modules(["down_proj"])
    }

    #[test]
    fn per_expert_factors_keep_every_rule_of_the_plan() {
        assert!(fuse_edited(down_config(), |_| {}).unwrap().is_some());
        // The selection decides: a projection no entry names, or one excluded, is refused.
        let other = LoraConfig::new(2, 4.0).with_target_modules(["up_proj"]);
        let error = fuse_edited(other, |_| {}).unwrap_err();
        assert!(
            matches!(&error, PeftError::NotSelected { option: "target_modules", path, .. } if path == "mlp.experts.0.down_proj"),
            "{error}"
        );
        let mut excluding = down_config();
        excluding.exclude_modules = Some(TargetModules::List(vec!["experts.1.down_proj".into()]));
        let error = fuse_edited(excluding, |_| {}).unwrap_err();
        assert!(
            matches!(&error, PeftError::NotSelected { option: "exclude_modules", path, .. } if path == "mlp.experts.1.down_proj"),
            "{error}"
        );
        // Ranks are the config's.
        let error = fuse_edited(
            LoraConfig::new(3, 4.0).with_target_modules(["down_proj"]),
            |_| {},
        )
        .unwrap_err();
        assert!(
            matches!(
                &error,
                PeftError::Rank {
                    expected: 3,
                    found: 2,
                    ..
                }
            ),
            "{error}"
        );
        // A half given twice (with and without PEFT's prefix) conflicts; a lone half is unpaired.
        let error = fuse_edited(down_config(), |t| {
            let (_, tensor) = factor("x", "A", [2, 4], 5.0);
            t.insert("mlp.experts.0.down_proj.lora_A.weight".into(), tensor);
        })
        .unwrap_err();
        assert!(matches!(&error, PeftError::Conflict { .. }), "{error}");
        let error = fuse_edited(down_config(), |t| {
            t.remove("base_model.model.mlp.experts.1.down_proj.lora_B.weight");
        })
        .unwrap_err();
        assert!(
            matches!(&error, PeftError::Unpaired { path, .. } if path == "mlp.experts.1.down_proj"),
            "{error}"
        );
        // The bank's own factors beside per-expert ones conflict.
        let error = fuse_edited(down_config(), |t| {
            t.extend([
                factor("mlp.experts.down_proj", "A", [4, 4], 2.0),
                factor("mlp.experts.down_proj", "B", [4, 4], 3.0),
            ]);
        })
        .unwrap_err();
        assert!(
            matches!(&error, PeftError::Conflict { path, .. } if path == "mlp.experts.down_proj"),
            "{error}"
        );
        // An expert index with a leading zero is no index: nothing is fused (the plan then finds
        // no such module).
        let renamed = fuse_edited(down_config(), |t| {
            *t = std::mem::take(t)
                .into_iter()
                .map(|(key, value)| (key.replace("experts.1.", "experts.01."), value))
                .collect();
        })
        .unwrap()
        .unwrap();
        assert!(
            renamed
                .tensors
                .keys()
                .any(|key| key.contains("experts.01."))
        );
    }
}
