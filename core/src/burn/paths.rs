//! burn's record paths and the module tree's paths, side by side.
//!
//! burn names a parameter by the fields, indices and enum variants above it
//! (`blocks.0.Attention.query.weight`): its `#[derive(Module)]` adds a newtype enum variant's
//! name as a segment. The module tree does not — a variant is transparent, as in Hugging Face
//! checkpoints — so the same parameter sits at `blocks.0.query.weight` in tree terms. Every other
//! segment is the same for fields that are not renamed with `#[tree(rename)]`: field names,
//! `Vec`/array/tuple indices, and `Option` adds nothing in both.
//!
//! [`PathMap`] reads burn's own traversal of a model (its [`ModuleVisitor`]) and records, for
//! every float parameter, its record path, its tree path (the record path without the enum
//! variant segments), its [`ParamId`], rank and shape. That is the mapping between the two
//! forms; [`record_to_tree_path`] applies it to one path when the variant names are known. A
//! field renamed with `#[tree(rename)]` keeps burn's name here; [`LoraSelection`] finds burn-nn
//! layers' weights by parameter id, which holds through renames.
//!
//! [`LoraSelection`]: crate::burn::LoraSelection

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

use crate::peft::names::{Factor, FactorName, FactorNaming, parse_factor_name};

/// What burn's `ModuleVisitor` reports as the container type of an enum variant's segment.
const ENUM_CONTAINER: &str = "Enum:";

/// One float parameter of a burn model, named both ways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamPath {
    /// burn's record path, enum variant names included (`blocks.0.Attention.query.weight`).
    pub record: String,
    /// The same path in module-tree terms, without enum variant names (`blocks.0.query.weight`).
    pub tree: String,
    /// The parameter's id.
    pub id: ParamId,
    /// The parameter's shape (read without initializing a lazy parameter).
    pub shape: Vec<usize>,
}

impl ParamPath {
    /// The tree path of the module that owns the parameter: the tree path without its last
    /// segment (`blocks.0.query` for `blocks.0.query.weight`).
    #[must_use]
    pub fn tree_module(&self) -> &str {
        self.tree.rsplit_once('.').map_or("", |(module, _)| module)
    }
}

/// Every float parameter of a burn model with its record path and its tree path.
///
/// Reparameterizations are included under the segments burn gives them: a LoRA adapter's
/// factors are `<weight>.lora.a` and `<weight>.lora.b`.
#[derive(Clone, Debug, Default)]
pub struct PathMap {
    params: Vec<ParamPath>,
    by_record: HashMap<String, usize>,
    by_tree: HashMap<String, usize>,
}

impl PathMap {
    /// Reads the parameters of `model` through burn's own traversal.
    #[must_use]
    pub fn new<M: Module>(model: &M) -> Self {
        let mut collector = Collector::default();
        model.visit(&mut collector);
        let params = collector.params;
        let by_record = params
            .iter()
            .enumerate()
            .map(|(index, param)| (param.record.clone(), index))
            .collect();
        // The first parameter wins where two variants' paths coincide in tree terms.
        let mut by_tree = HashMap::new();
        for (index, param) in params.iter().enumerate() {
            by_tree.entry(param.tree.clone()).or_insert(index);
        }
        PathMap {
            params,
            by_record,
            by_tree,
        }
    }

    /// The parameters in burn's traversal order.
    #[must_use]
    pub fn params(&self) -> &[ParamPath] {
        &self.params
    }

    /// The tree path of the parameter at this record path.
    #[must_use]
    pub fn to_tree(&self, record: &str) -> Option<&str> {
        self.by_record
            .get(record)
            .map(|&index| self.params[index].tree.as_str())
    }

    /// The record path of the parameter at this tree path.
    #[must_use]
    pub fn to_record(&self, tree: &str) -> Option<&str> {
        self.by_tree
            .get(tree)
            .map(|&index| self.params[index].record.as_str())
    }

    /// The parameter with this id.
    #[must_use]
    pub fn by_id(&self, id: &ParamId) -> Option<&ParamPath> {
        self.params.iter().find(|param| param.id == *id)
    }
}

/// Removes the enum variant segments named in `variants` from a burn record path, giving the
/// module-tree path (`record_to_tree_path("block.Attention.query.weight", &["Attention"])` is
/// `"block.query.weight"`).
///
/// A segment is removed only where it is a whole segment equal to a variant name; use
/// [`PathMap`] when the variant names are not known, since it reads them from the model.
#[must_use]
pub fn record_to_tree_path(record: &str, variants: &[&str]) -> String {
    record
        .split('.')
        .filter(|segment| !variants.contains(segment))
        .collect::<Vec<_>>()
        .join(".")
}

#[derive(Default)]
struct Collector {
    record: Vec<String>,
    is_variant: Vec<bool>,
    params: Vec<ParamPath>,
}

impl Collector {
    fn push(&mut self, id: ParamId, shape: Vec<usize>) {
        let record = self.record.join(".");
        let tree = self
            .record
            .iter()
            .zip(&self.is_variant)
            .filter(|(_, variant)| !**variant)
            .map(|(segment, _)| segment.as_str())
            .collect::<Vec<_>>()
            .join(".");
        self.params.push(ParamPath {
            record,
            tree,
            id,
            shape,
        });
    }
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.record.push(name.to_owned());
        self.is_variant
            .push(container_type.starts_with(ENUM_CONTAINER));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.record.pop();
        self.is_variant.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.push(param.id, param.lazy_shape().to_vec());
    }
}

/// PEFT's key for a burn LoRA factor of a linear layer: `<layer>.weight.lora.a` becomes
/// `base_model.model.<layer>.lora_A.weight`, `.lora.b` becomes `lora_B.weight`. (An embedding's
/// factors are named `lora_embedding_A` / `lora_embedding_B`; a path alone does not tell the two
/// apart.)
///
/// The path is in tree form (see [`PathMap`](crate::burn::PathMap), whose `tree` paths are
/// these once enum variant names are dropped); `None` for a path that is not a factor of a
/// layer's `weight`.
///
/// ```
/// use moduletree::burn::{lora_factor_to_peft_key, peft_key_to_lora_factor};
///
/// let key = lora_factor_to_peft_key("blocks.0.fc2.weight.lora.a").unwrap();
/// assert_eq!(key, "base_model.model.blocks.0.fc2.lora_A.weight");
/// assert_eq!(peft_key_to_lora_factor(&key).unwrap(), "blocks.0.fc2.weight.lora.a");
/// assert_eq!(peft_key_to_lora_factor("blocks.0.fc2.lora_B.weight").unwrap(), "blocks.0.fc2.weight.lora.b");
/// assert_eq!(lora_factor_to_peft_key("blocks.0.fc2.weight"), None);
/// ```
#[must_use]
pub fn lora_factor_to_peft_key(path: &str) -> Option<String> {
    let (layer, factor) = match (
        path.strip_suffix(".weight.lora.a"),
        path.strip_suffix(".weight.lora.b"),
    ) {
        (Some(layer), _) => (layer, Factor::A),
        (_, Some(layer)) => (layer, Factor::B),
        _ => return None,
    };
    (!layer.is_empty()).then(|| {
        FactorName {
            path: layer,
            factor,
            naming: FactorNaming::Linear,
        }
        .to_peft()
    })
}

/// The burn LoRA factor path (tree form) of a linear's PEFT key, with or without PEFT's prefix;
/// the inverse of [`lora_factor_to_peft_key`]. `None` for an embedding's key.
#[must_use]
pub fn peft_key_to_lora_factor(key: &str) -> Option<String> {
    let name = parse_factor_name(key)?;
    let factor = match name.factor {
        Factor::A => "a",
        Factor::B => "b",
    };
    (name.naming == FactorNaming::Linear).then(|| format!("{}.weight.lora.{factor}", name.path))
}
