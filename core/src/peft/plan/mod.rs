//! Checking an [`Adapter`] against a model, before anything changes: the one set of rules by
//! which candle and burn accept or refuse a file.
//!
//! The framework reports what each leaf layer is ([`LayerInfo`]); [`Adapter::plan`] then checks,
//! in this order, and returns the first problem:
//!
//! 1. the config's selection resolves against the model ([`PeftError::Selection`]);
//! 2. every factor pair: its module exists ([`PeftError::NoSuchModule`]), the selection keeps it
//!    ([`PeftError::NotSelected`], naming the option that leaves it out), both halves are there
//!    ([`PeftError::Unpaired`]), the layer is a linear or an embedding named as such
//!    ([`PeftError::NotAdaptable`]), the rank is the config's for that path
//!    ([`PeftError::Rank`]) and the shapes fit ([`PeftError::Shape`]), and the layer can take it
//!    ([`PeftError::NotASlot`], [`PeftError::DuplicateAdapter`], [`PeftError::ReadOnly`]);
//! 3. every selected layer has its factors ([`PeftError::Missing`]);
//! 4. every parameter of a module saved whole belongs to a `modules_to_save` module and fits its
//!    layer, and every such module's layers have all their parameters
//!    ([`PeftError::MissingSaved`]).
//!
//! Tensor names are handled in sorted order, so the problem reported does not depend on hashing.

use std::collections::{BTreeMap, HashMap, HashSet};

mod group;
mod saved;

use self::group::{Pair, bank_pairs};
use crate::path::push_path;
use crate::peft::adapter::{Adapter, RawTensor};
use crate::peft::error::PeftError;
use crate::peft::layer::{Attachment, LayerInfo, LayerShape, LoadMode, LoadPlan, PlannedFactors};
use crate::peft::names::{FactorNaming, other_half};
use crate::target::ResolvedLayer;
use crate::tree::ModuleTree;
use crate::walk::walk;

/// A node the file names (by factors or whole parameters), as the walk found it.
#[derive(Clone, Copy)]
struct Surveyed {
    is_layer: bool,
    type_name: &'static str,
    /// Position in walk order.
    position: usize,
}

/// What one walk of the model learns for the plan.
struct Survey {
    /// The nodes the file names, by joined path.
    nodes: HashMap<String, Surveyed>,
    /// The leaf layers inside modules saved whole, in walk order.
    saved_layers: Vec<String>,
    /// Whether each `modules_to_save` entry covers a node.
    saved_used: Vec<bool>,
}

impl Survey {
    /// Where `path` stands in walk order (last if the walk did not find it).
    fn position(&self, path: &str) -> usize {
        self.nodes
            .get(path)
            .map_or(usize::MAX, |node| node.position)
    }
}

impl Adapter {
    /// Checks the adapter against `model`, whose leaf layers `layers` describes (by joined
    /// path), for loading in `mode` under the adapter name `adapter`. See the
    /// [module docs](self) for the checks.
    ///
    /// # Errors
    ///
    /// The first problem found, as listed in the module docs.
    pub fn plan<M: ModuleTree + ?Sized>(
        &self,
        model: &M,
        layers: &HashMap<String, LayerInfo>,
        mode: LoadMode,
        adapter: &str,
    ) -> Result<LoadPlan<'_>, PeftError> {
        let resolution = self
            .spec
            .resolve(model)
            .map_err(|source| PeftError::Selection {
                file: self.config_file.clone(),
                source,
            })?;
        let (pairs, parameters) = self.group()?;
        let pairs = bank_pairs(pairs, &resolution.layers)?;
        let parameter_paths: HashSet<&str> = parameters.keys().map(|(path, _)| *path).collect();
        let survey = self.survey(model, &pairs, &parameter_paths);
        let selected: HashMap<&str, (u32, f64)> = resolution
            .layers
            .iter()
            .map(|layer| (layer.path.as_str(), (layer.rank, layer.alpha)))
            .collect();
        let mut factors = Vec::with_capacity(pairs.len());
        for (path, pair) in &pairs {
            let path = path.as_str();
            let key = pair.a.or(pair.b).map_or(path, |(key, _)| key);
            let Some(node) = survey.nodes.get(path) else {
                return Err(PeftError::NoSuchModule {
                    key: key.to_owned(),
                    path: path.to_owned(),
                    suggestions: same_name(path, layers),
                });
            };
            if !node.is_layer {
                return Err(PeftError::NotAdaptable {
                    key: key.to_owned(),
                    path: path.to_owned(),
                    type_name: node.type_name,
                    what: "is a module or container, not a leaf layer",
                });
            }
            let tied = self.tied_head(path, pair, layers, &resolution.layers);
            let Some(&(rank, alpha)) = selected.get(path).or(tied.as_ref()) else {
                return Err(PeftError::NotSelected {
                    key: key.to_owned(),
                    path: path.to_owned(),
                    option: self.left_out_by(model, path),
                });
            };
            let ((a_key, a), (b_key, b)) = match (pair.a, pair.b) {
                (Some(a), Some(b)) => (a, b),
                (Some((present, _)), None) | (None, Some((present, _))) => {
                    return Err(PeftError::Unpaired {
                        path: path.to_owned(),
                        present: present.to_owned(),
                        missing: other_half(present),
                    });
                }
                (None, None) => continue,
            };
            let info = layers.get(path).ok_or_else(|| PeftError::NotAdaptable {
                key: key.to_owned(),
                path: path.to_owned(),
                type_name: "module",
                what: "is not a leaf layer",
            })?;
            let naming = pair.naming.unwrap_or(FactorNaming::Linear);
            let dims = FactorDims::of(info.shape, naming)
                .map_err(|what| not_adaptable(key, path, info, what))?;
            let r = usize::try_from(rank)
                .unwrap_or(usize::MAX)
                .saturating_mul(dims.experts);
            let a_shape = [r, dims.a_cols];
            let b_shape = [dims.b_rows, r];
            check_shape(
                a_key,
                path,
                a,
                a_shape,
                dims.axes.0,
                (0, dims.experts),
                rank,
            )?;
            check_shape(
                b_key,
                path,
                b,
                b_shape,
                dims.axes.1,
                (1, dims.experts),
                rank,
            )?;
            check_attachment(path, info, mode, adapter)?;
            factors.push(PlannedFactors {
                path: path.to_owned(),
                naming,
                rank,
                alpha,
                scale: self.config.scale(rank, alpha),
                a,
                b,
            });
        }
        if let Some(layer) = resolution
            .layers
            .iter()
            .find(|layer| !pairs.contains_key(layer.path.as_str()))
        {
            return Err(PeftError::Missing {
                path: layer.path.clone(),
            });
        }
        let parameters = self.plan_parameters(&survey, layers, parameters)?;
        factors.sort_by_key(|planned| survey.position(&planned.path));
        Ok(LoadPlan {
            factors,
            parameters,
        })
    }

    /// The PEFT option that leaves the node at `path` out of the selection (a walk made only to
    /// explain a refusal).
    fn left_out_by<M: ModuleTree + ?Sized>(&self, model: &M, path: &str) -> &'static str {
        let mut joined = String::new();
        let mut option = None;
        walk(model, |node| {
            if option.is_some() {
                return;
            }
            joined.clear();
            push_path(&mut joined, node.path().segments(), false);
            if joined == path {
                option = self.spec.left_out_by(node, &joined);
            }
        });
        option.unwrap_or("target_modules")
    }

    /// With `ensure_weight_tying`, PEFT gives an output head tied to an adapted input embedding
    /// the embedding's adapter transposed (`lora_A = lora_embedding_Bᵀ`, `lora_B =
    /// lora_embedding_Aᵀ`) and saves it under the head's own name, though `target_modules` names
    /// only the embedding. Such a pair is selected with the embedding's rank and alpha when the
    /// head is a linear `[num_embeddings, embedding_dim]` of a selected embedding.
    fn tied_head(
        &self,
        path: &str,
        pair: &Pair<'_>,
        layers: &HashMap<String, LayerInfo>,
        selected: &[ResolvedLayer],
    ) -> Option<(u32, f64)> {
        if !self.config.ensure_weight_tying || pair.naming != Some(FactorNaming::Linear) {
            return None;
        }
        let LayerShape::Linear {
            in_features,
            out_features,
            ..
        } = layers.get(path)?.shape
        else {
            return None;
        };
        selected
            .iter()
            .find_map(|layer| match layers.get(&layer.path)?.shape {
                LayerShape::Embedding {
                    num_embeddings,
                    embedding_dim,
                } if (num_embeddings, embedding_dim) == (out_features, in_features) => {
                    Some((layer.rank, layer.alpha))
                }
                _ => None,
            })
    }

    /// One walk: the nodes the file names (by factors or whole parameters), and
    /// the layers inside modules saved whole.
    fn survey<M: ModuleTree + ?Sized>(
        &self,
        model: &M,
        pairs: &BTreeMap<String, Pair<'_>>,
        parameters: &HashSet<&str>,
    ) -> Survey {
        let saved = self.spec.saved_modules();
        let mut survey = Survey {
            nodes: HashMap::new(),
            saved_layers: Vec::new(),
            saved_used: vec![false; saved.len()],
        };
        let mut joined = String::new();
        let mut position = 0;
        walk(model, |node| {
            joined.clear();
            push_path(&mut joined, node.path().segments(), false);
            position += 1;
            if pairs.contains_key(joined.as_str()) || parameters.contains(joined.as_str()) {
                let surveyed = Surveyed {
                    is_layer: node.is_layer(),
                    type_name: node.type_name(),
                    position,
                };
                survey.nodes.insert(joined.clone(), surveyed);
            }
            if !saved.is_empty() && self.spec.in_saved_module(node.path().segments(), &joined) {
                for (used, module) in survey.saved_used.iter_mut().zip(saved) {
                    *used |= module.matches_path(node.path().segments(), &joined);
                }
                if node.is_layer() {
                    survey.saved_layers.push(joined.clone());
                }
            }
        });
        survey
    }
}

fn not_adaptable(key: &str, path: &str, info: &LayerInfo, what: &'static str) -> PeftError {
    PeftError::NotAdaptable {
        key: key.to_owned(),
        path: path.to_owned(),
        type_name: info.type_name,
        what,
    }
}

/// The factor shapes a layer takes: `lora_A` is `[experts·r, a_cols]` and `lora_B` is
/// `[b_rows, r·experts]`, with `experts` 1 for a linear or an embedding.
struct FactorDims {
    a_cols: usize,
    b_rows: usize,
    experts: usize,
    /// The axes of `lora_A` and `lora_B`, for errors.
    axes: (&'static str, &'static str),
}

impl FactorDims {
    /// The dims for factors named as `naming` on a layer of `shape`, or why it cannot take them.
    fn of(shape: LayerShape, naming: FactorNaming) -> Result<Self, &'static str> {
        let dims = |a_cols, b_rows, experts, axes| FactorDims {
            a_cols,
            b_rows,
            experts,
            axes,
        };
        match (shape, naming) {
            (
                LayerShape::Bank {
                    experts,
                    in_features,
                    out_features,
                },
                FactorNaming::Linear,
            ) => Ok(dims(
                in_features,
                out_features,
                experts.max(1),
                ("[experts·r, in_features]", "[out_features, r·experts]"),
            )),
            (
                LayerShape::Linear {
                    in_features,
                    out_features,
                    ..
                },
                FactorNaming::Linear,
            ) => Ok(dims(
                in_features,
                out_features,
                1,
                ("[r, in_features]", "[out_features, r]"),
            )),
            (
                LayerShape::Embedding {
                    num_embeddings,
                    embedding_dim,
                },
                FactorNaming::Embedding,
            ) => Ok(dims(
                num_embeddings,
                embedding_dim,
                1,
                ("[r, num_embeddings]", "[embedding_dim, r]"),
            )),
            (LayerShape::Bank { .. }, FactorNaming::Embedding) => {
                Err("is a bank of experts' linears, not an embedding")
            }
            (LayerShape::Linear { .. }, FactorNaming::Embedding) => {
                Err("is a linear, not an embedding")
            }
            (LayerShape::Embedding { .. }, FactorNaming::Linear) => {
                Err("is an embedding, not a linear")
            }
            (LayerShape::Other, _) => Err(
                "has no float weight of a known shape for LoRA: it is quantized, its weight's header was not read, or it is neither a linear nor an embedding",
            ),
        }
    }
}

/// Checks a factor's shape; `rank_axis` is where the rank sits, so that a tensor right in its
/// other axis is reported as a rank mismatch.
fn check_shape(
    key: &str,
    path: &str,
    tensor: &RawTensor,
    expected: [usize; 2],
    axes: &'static str,
    (rank_axis, experts): (usize, usize),
    rank: u32,
) -> Result<(), PeftError> {
    let found = &tensor.shape;
    if found.as_slice() == expected {
        return Ok(());
    }
    let other = 1 - rank_axis;
    // The rank axis holds `experts · r` for a bank: a width that divides is another rank.
    if found.len() == 2
        && found[other] == expected[other]
        && found[rank_axis].is_multiple_of(experts)
    {
        return Err(PeftError::Rank {
            key: key.to_owned(),
            path: path.to_owned(),
            expected: rank,
            found: found[rank_axis] / experts,
        });
    }
    Err(PeftError::Shape {
        key: key.to_owned(),
        path: path.to_owned(),
        expected: expected.to_vec(),
        found: found.clone(),
        axes,
    })
}

fn check_attachment(
    path: &str,
    info: &LayerInfo,
    mode: LoadMode,
    adapter: &str,
) -> Result<(), PeftError> {
    match (&info.attachment, mode) {
        (Attachment::ReadOnly, _) => Err(PeftError::ReadOnly {
            path: path.to_owned(),
        }),
        (Attachment::Slot(names), LoadMode::Attach) if names.iter().any(|n| n == adapter) => {
            Err(PeftError::DuplicateAdapter {
                path: path.to_owned(),
                adapter: adapter.to_owned(),
            })
        }
        (Attachment::InPlace(true), _) => Err(PeftError::DuplicateAdapter {
            path: path.to_owned(),
            adapter: adapter.to_owned(),
        }),
        (Attachment::Plain { slot }, LoadMode::Attach) => Err(PeftError::NotASlot {
            path: path.to_owned(),
            type_name: info.type_name,
            slot,
        }),
        _ => Ok(()),
    }
}

/// Up to three layer paths with the same last segment as `path`, sorted.
fn same_name(path: &str, layers: &HashMap<String, LayerInfo>) -> Vec<String> {
    let last = |path: &str| path.rsplit('.').next().unwrap_or(path).to_owned();
    let name = last(path);
    let mut found: Vec<String> = layers
        .keys()
        .filter(|layer| last(layer) == name)
        .cloned()
        .collect();
    found.sort();
    found.truncate(3);
    found
}
