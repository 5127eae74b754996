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

use crate::path::push_path;
use crate::peft::adapter::{Adapter, RawTensor};
use crate::peft::error::PeftError;
use crate::peft::layer::{
    Attachment, LayerInfo, LayerShape, LoadMode, LoadPlan, PlannedFactors, PlannedParameter,
};
use crate::peft::names::{AdapterKey, Factor, FactorNaming, parse_key};
use crate::tree::ModuleTree;
use crate::walk::walk;

#[derive(Clone, Copy, Default)]
struct Pair<'t> {
    a: Option<(&'t str, &'t RawTensor)>,
    b: Option<(&'t str, &'t RawTensor)>,
    naming: Option<FactorNaming>,
}

/// What one walk of the model learns for the plan.
struct Survey {
    /// The nodes the file names (by factors or whole parameters): path → whether it is a leaf
    /// layer, and its type name.
    nodes: HashMap<String, (bool, &'static str)>,
    /// The leaf layers inside modules saved whole, in walk order.
    saved_layers: Vec<String>,
    /// Whether each `modules_to_save` entry covers a node.
    saved_used: Vec<bool>,
    /// Walk order of the nodes the file names.
    order: HashMap<String, usize>,
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
        let remapped = bank_pairs(pairs, &resolution.layers);
        let pairs: BTreeMap<&str, Pair<'_>> = remapped
            .iter()
            .map(|(path, pair)| (path.as_str(), *pair))
            .collect();
        let parameter_paths: HashSet<&str> = parameters.keys().map(|(path, _)| *path).collect();
        let survey = self.survey(model, &pairs, &parameter_paths);
        let selected: HashMap<&str, (u32, f64)> = resolution
            .layers
            .iter()
            .map(|layer| (layer.path.as_str(), (layer.rank, layer.alpha)))
            .collect();
        let mut factors = Vec::with_capacity(pairs.len());
        for (path, pair) in &pairs {
            let key = pair.a.or(pair.b).map_or(*path, |(key, _)| key);
            let Some(&(is_layer, type_name)) = survey.nodes.get(*path) else {
                return Err(PeftError::NoSuchModule {
                    key: key.to_owned(),
                    path: (*path).to_owned(),
                    suggestions: same_name(path, layers),
                });
            };
            if !is_layer {
                return Err(PeftError::NotAdaptable {
                    key: key.to_owned(),
                    path: (*path).to_owned(),
                    type_name,
                    what: "is a module or container, not a leaf layer",
                });
            }
            let tied = self.tied_head(path, pair, layers, &resolution.layers);
            let Some(&(rank, alpha)) = selected.get(path).or(tied.as_ref()) else {
                return Err(PeftError::NotSelected {
                    key: key.to_owned(),
                    path: (*path).to_owned(),
                    option: self.left_out_by(model, path),
                });
            };
            let naming = pair.naming.unwrap_or(FactorNaming::Linear);
            let ((a_key, a), (b_key, b)) = match (pair.a, pair.b) {
                (Some(a), Some(b)) => (a, b),
                (Some((present, _)), None) | (None, Some((present, _))) => {
                    return Err(PeftError::Unpaired {
                        path: (*path).to_owned(),
                        present: present.to_owned(),
                        missing: other_half(present),
                    });
                }
                (None, None) => continue,
            };
            let info = layers.get(*path).ok_or_else(|| PeftError::NotAdaptable {
                key: key.to_owned(),
                path: (*path).to_owned(),
                type_name: "module",
                what: "is not a leaf layer",
            })?;
            let mut experts = 1;
            let (a_cols, b_rows, axes) = match (info.shape, naming) {
                (
                    LayerShape::Bank {
                        experts: count,
                        in_features,
                        out_features,
                    },
                    FactorNaming::Linear,
                ) => {
                    experts = count.max(1);
                    (
                        in_features,
                        out_features,
                        ("[experts·r, in_features]", "[out_features, r·experts]"),
                    )
                }
                (LayerShape::Bank { .. }, FactorNaming::Embedding) => {
                    return Err(not_adaptable(
                        key,
                        path,
                        info,
                        "is a bank of experts' linears, not an embedding",
                    ));
                }
                (
                    LayerShape::Linear {
                        in_features,
                        out_features,
                        ..
                    },
                    FactorNaming::Linear,
                ) => (
                    in_features,
                    out_features,
                    ("[r, in_features]", "[out_features, r]"),
                ),
                (
                    LayerShape::Embedding {
                        num_embeddings,
                        embedding_dim,
                    },
                    FactorNaming::Embedding,
                ) => (
                    num_embeddings,
                    embedding_dim,
                    ("[r, num_embeddings]", "[embedding_dim, r]"),
                ),
                (LayerShape::Linear { .. }, FactorNaming::Embedding) => {
                    return Err(not_adaptable(
                        key,
                        path,
                        info,
                        "is a linear, not an embedding",
                    ));
                }
                (LayerShape::Embedding { .. }, FactorNaming::Linear) => {
                    return Err(not_adaptable(
                        key,
                        path,
                        info,
                        "is an embedding, not a linear",
                    ));
                }
                (LayerShape::Other, _) => {
                    return Err(not_adaptable(
                        key,
                        path,
                        info,
                        "is neither a linear nor an embedding",
                    ));
                }
            };
            let r = usize::try_from(rank)
                .unwrap_or(usize::MAX)
                .saturating_mul(experts);
            check_shape(a_key, path, a, [r, a_cols], axes.0, (0, experts), rank)?;
            check_shape(b_key, path, b, [b_rows, r], axes.1, (1, experts), rank)?;
            check_attachment(path, info, mode, adapter)?;
            factors.push(PlannedFactors {
                path: (*path).to_owned(),
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
        let order = |path: &str| survey.order.get(path).copied().unwrap_or(usize::MAX);
        factors.sort_by_key(|planned| order(&planned.path));
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
        selected: &[crate::target::ResolvedLayer],
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

    /// Splits the tensors into factor pairs and whole parameters by module path.
    #[expect(
        clippy::type_complexity,
        reason = "two maps, named at the one call site"
    )]
    fn group(
        &self,
    ) -> Result<
        (
            BTreeMap<&str, Pair<'_>>,
            BTreeMap<(&str, &str), (&str, &RawTensor)>,
        ),
        PeftError,
    > {
        let mut pairs: BTreeMap<&str, Pair<'_>> = BTreeMap::new();
        let mut parameters = BTreeMap::new();
        for (key, tensor) in &self.tensors {
            match parse_key(key) {
                None => return Err(PeftError::UnknownTensor { key: key.clone() }),
                Some(AdapterKey::Parameter { path, param }) => {
                    // PEFT saves `<layer>.base_layer.weight` copies of embedding layers it
                    // adapts (`save_embedding_layers`): a whole parameter of that layer.
                    let path = path.strip_suffix(".base_layer").unwrap_or(path);
                    if let Some((first, _)) =
                        parameters.insert((path, param), (key.as_str(), tensor))
                    {
                        return Err(PeftError::Conflict {
                            path: path.to_owned(),
                            first: first.to_owned(),
                            second: key.clone(),
                        });
                    }
                }
                Some(AdapterKey::Factor(name)) => {
                    let pair = pairs.entry(name.path).or_default();
                    let naming = *pair.naming.get_or_insert(name.naming);
                    let slot = match name.factor {
                        Factor::A => &mut pair.a,
                        Factor::B => &mut pair.b,
                    };
                    let clash = match slot {
                        Some((first, _)) => Some(*first),
                        None if naming != name.naming => pair.a.or(pair.b).map(|(first, _)| first),
                        None => None,
                    };
                    if let Some(first) = clash {
                        return Err(PeftError::Conflict {
                            path: name.path.to_owned(),
                            first: first.to_owned(),
                            second: key.clone(),
                        });
                    }
                    let slot = match name.factor {
                        Factor::A => &mut pair.a,
                        Factor::B => &mut pair.b,
                    };
                    *slot = Some((key.as_str(), tensor));
                }
            }
        }
        Ok((pairs, parameters))
    }

    /// One walk: the nodes the file names (by factors or whole parameters), and
    /// the layers inside modules saved whole.
    fn survey<M: ModuleTree + ?Sized>(
        &self,
        model: &M,
        pairs: &BTreeMap<&str, Pair<'_>>,
        parameters: &HashSet<&str>,
    ) -> Survey {
        let saved = self.spec.saved_modules();
        let mut survey = Survey {
            nodes: HashMap::new(),
            saved_layers: Vec::new(),
            saved_used: vec![false; saved.len()],
            order: HashMap::new(),
        };
        let mut joined = String::new();
        let mut position = 0;
        walk(model, |node| {
            joined.clear();
            push_path(&mut joined, node.path().segments(), false);
            position += 1;
            let paired = pairs.contains_key(joined.as_str());
            if paired || parameters.contains(joined.as_str()) {
                survey.order.insert(joined.clone(), position);
                survey
                    .nodes
                    .insert(joined.clone(), (node.is_layer(), node.type_name()));
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

    fn plan_parameters<'a>(
        &'a self,
        survey: &Survey,
        layers: &HashMap<String, LayerInfo>,
        parameters: BTreeMap<(&'a str, &'a str), (&'a str, &'a RawTensor)>,
    ) -> Result<Vec<PlannedParameter<'a>>, PeftError> {
        let saved = self.config.modules_to_save.as_deref().unwrap_or_default();
        if let Some(unused) = survey
            .saved_used
            .iter()
            .position(|used| !used)
            .and_then(|at| saved.get(at))
        {
            return Err(PeftError::NoSuchModule {
                key: "modules_to_save".to_owned(),
                path: unused.clone(),
                suggestions: same_name(unused, layers),
            });
        }
        let saved_layers: HashSet<&str> = survey.saved_layers.iter().map(String::as_str).collect();
        let mut planned = Vec::with_capacity(parameters.len());
        for ((path, param), (key, tensor)) in &parameters {
            let base_copy = key.contains(".base_layer.") && layers.contains_key(*path);
            if !saved_layers.contains(path) && !base_copy {
                if survey.nodes.contains_key(*path) || saved.is_empty() {
                    return Err(PeftError::UnknownTensor {
                        key: (*key).to_owned(),
                    });
                }
                return Err(PeftError::NoSuchModule {
                    key: (*key).to_owned(),
                    path: (*path).to_owned(),
                    suggestions: same_name(path, layers),
                });
            }
            let Some(info) = layers.get(*path) else {
                return Err(PeftError::UnknownTensor {
                    key: (*key).to_owned(),
                });
            };
            let expected = match (info.shape, *param) {
                (
                    LayerShape::Linear {
                        in_features,
                        out_features,
                        ..
                    },
                    "weight",
                ) => (
                    vec![out_features, in_features],
                    "[out_features, in_features]",
                ),
                (
                    LayerShape::Linear {
                        out_features,
                        bias: true,
                        ..
                    },
                    "bias",
                ) => (vec![out_features], "[out_features]"),
                (
                    LayerShape::Embedding {
                        num_embeddings,
                        embedding_dim,
                    },
                    "weight",
                ) => (
                    vec![num_embeddings, embedding_dim],
                    "[num_embeddings, embedding_dim]",
                ),
                (LayerShape::Other, _) => {
                    return Err(not_adaptable(
                        key,
                        path,
                        info,
                        "is neither a linear nor an embedding, so it cannot be loaded whole",
                    ));
                }
                _ => {
                    return Err(not_adaptable(key, path, info, "has no such parameter"));
                }
            };
            if tensor.shape != expected.0 {
                return Err(PeftError::Shape {
                    key: (*key).to_owned(),
                    path: (*path).to_owned(),
                    expected: expected.0,
                    found: tensor.shape.clone(),
                    axes: expected.1,
                });
            }
            if info.attachment == Attachment::ReadOnly {
                return Err(PeftError::ReadOnly {
                    path: (*path).to_owned(),
                });
            }
            planned.push(PlannedParameter {
                path: (*path).to_owned(),
                param: (*param).to_owned(),
                tensor,
            });
        }
        for path in &survey.saved_layers {
            let needed: &[&str] = match layers.get(path).map(|info| info.shape) {
                Some(LayerShape::Linear { bias: true, .. }) => &["weight", "bias"],
                Some(LayerShape::Linear { .. } | LayerShape::Embedding { .. }) => &["weight"],
                _ => &[],
            };
            if let Some(param) = needed
                .iter()
                .find(|param| !parameters.contains_key(&(path.as_str(), **param)))
            {
                return Err(PeftError::MissingSaved {
                    path: path.clone(),
                    param: (*param).to_owned(),
                });
            }
        }
        let order = |path: &str| survey.order.get(path).copied().unwrap_or(usize::MAX);
        planned.sort_by_key(|parameter| order(&parameter.path));
        Ok(planned)
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

/// PEFT keys a `ParamWrapper`'s factors on the module that owns the parameter, the wrappers of
/// several parameters of one module nested in their registration order: with `n` adapted
/// parameters, the last is at `<module>`, the one before at `<module>.base_layer`, and so on
/// (`peft/tuners/tuners_utils.py`, `_inject_parameters`). This maps such a pair to the bank it
/// adapts: the selected `grouped_linear` leaves under that module, in walk order, which is
/// their declaration order.
fn bank_pairs<'t>(
    pairs: BTreeMap<&'t str, Pair<'t>>,
    selected: &[crate::target::ResolvedLayer],
) -> BTreeMap<String, Pair<'t>> {
    let mut banks: HashMap<&str, Vec<&str>> = HashMap::new();
    for layer in selected {
        if layer.kind == crate::kind::Kind::GroupedLinear
            && let Some((module, _)) = layer.path.rsplit_once('.')
        {
            banks.entry(module).or_default().push(&layer.path);
        }
    }
    pairs
        .into_iter()
        .map(|(path, pair)| {
            let mut module = path;
            let mut depth = 0;
            while let Some(inner) = module.strip_suffix(".base_layer") {
                module = inner;
                depth += 1;
            }
            let bank = banks
                .get(module)
                .and_then(|list| list.len().checked_sub(depth + 1).map(|at| list[at]));
            (bank.unwrap_or(path).to_owned(), pair)
        })
        .collect()
}
