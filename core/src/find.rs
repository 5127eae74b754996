//! The reference functions: `named_modules` and the `find_layers` family, done right.
//!
//! `find_layers` names the nodes where a condition holds by the shortest run of trailing
//! *normalized* segments that no other node's normalized path ends with, so that the names are
//! unambiguous LoRA targets: one name per module across all layers, never a bare index, never a
//! collision between `proj` and `out_proj` (segments are compared whole). A name that even its
//! full path cannot make unique is returned anchored at the root (`^model.layers.<>.q_proj`).
//! Results are distinct and in walk order.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use crate::kind::{Kind, Parallel};
use crate::path::{ANY_INDEX, Segment};
use crate::tree::{ModuleTree, Role};
use crate::walk::{Node, Walk, walk, walk_mut};

/// One node of [`named_modules`], owned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedModule {
    /// The path, joined by `.`; `""` for the root.
    pub path: String,
    /// The path with every index as `<>`.
    pub normalized: String,
    /// The type's name without generics.
    pub type_name: &'static str,
    /// Module, container or layer.
    pub role: Role,
    /// The kind of a leaf layer.
    pub kind: Option<Kind>,
    /// Whether the node lies in an `#[expert]` subtree (or is a `grouped_linear`).
    pub is_expert: bool,
    /// Whether the layer is an output head.
    pub head: bool,
    /// The layer's tensor-parallel style.
    pub parallel: Option<Parallel>,
    /// The layer index (see [`Node::layer_index`]).
    pub layer_index: Option<usize>,
}

impl NamedModule {
    /// The owned record of a walked node.
    #[must_use]
    pub fn of(node: &Node<'_, '_>) -> Self {
        NamedModule {
            path: node.path().to_string(),
            normalized: node.path().normalized().to_string(),
            type_name: node.type_name(),
            role: node.role(),
            kind: node.kind(),
            is_expert: node.is_expert(),
            head: node.is_head(),
            parallel: node.parallel(),
            layer_index: node.layer_index(),
        }
    }
}

/// Every node of `model`, like PyTorch's `named_modules()`: the root (`""`) first, parents before
/// children, fields in declaration order.
///
/// `model` may also be a type's static [`Schema`](crate::Schema) (`&Llama::SCHEMA`): its nodes
/// are every node a value of the type can have, with `<>` for the elements of each container.
#[must_use]
pub fn named_modules<T: Walk + ?Sized>(model: &T) -> Vec<NamedModule> {
    let mut modules = Vec::new();
    walk(model, |node| modules.push(NamedModule::of(node)));
    modules
}

/// The names of the nodes of `model` where `cond` holds, each as the shortest run of trailing
/// normalized segments that names no node where `cond` is false.
///
/// Let *others* be the normalized paths of every node where `cond` is false (root and containers
/// included). For each node where `cond` holds, in walk order, the result keeps the shortest
/// trailing run of its normalized path that no path in *others* ends with, segment by segment; if
/// even the whole normalized path is the tail of another, it is returned anchored at the root
/// (`^model.layers.<>.q_proj`). The distinct results come in first-seen order.
///
/// ```
/// use moduletree::ModuleTree;
///
/// #[derive(ModuleTree)]
/// struct Attention {
///     #[layer(kind = "linear")]
///     proj: (),
///     #[layer(kind = "linear")]
///     out_proj: (),
/// }
///
/// let names = moduletree::find_layers(&vec![Attention { proj: (), out_proj: () }], |node| {
///     node.path().last() == Some(moduletree::Segment::Name("proj"))
/// });
/// assert_eq!(names, ["proj"]);
/// ```
pub fn find_layers<T, F>(model: &T, mut cond: F) -> Vec<String>
where
    T: Walk + ?Sized,
    F: FnMut(&Node<'_, '_>) -> bool,
{
    let mut paths = DistinctPaths::default();
    walk(model, |node| {
        let matched = cond(node);
        paths.insert(node.path().segments(), matched);
    });
    paths.shortest_names()
}

/// The linear-family layers that are not heads: the names to give PEFT's `target_modules` for
/// "all linear layers".
#[must_use]
pub fn find_all_linear_modules<T: Walk + ?Sized>(model: &T) -> Vec<String> {
    find_layers(model, |node| {
        node.kind().is_some_and(Kind::is_linear_family) && !node.is_head()
    })
}

/// The embedding layers.
#[must_use]
pub fn find_all_embedding_modules<T: Walk + ?Sized>(model: &T) -> Vec<String> {
    find_layers(model, |node| node.kind() == Some(Kind::Embedding))
}

/// The routers (mixture-of-experts gates).
#[must_use]
pub fn find_all_router_modules<T: Walk + ?Sized>(model: &T) -> Vec<String> {
    find_layers(model, |node| node.kind() == Some(Kind::Router))
}

/// Marks every linear-family layer under an `#[expert]` subtree, and every `grouped_linear`, as an
/// expert, and returns their paths in walk order.
///
/// The flag is set on the layers that can hold one at run time (the crate's adapter layers, and
/// `#[layer]` types with an `#[layer(expert_flag)]` field). Every node already reports
/// [`Node::is_expert`] from its type; that typed flag is what the rest of the crate reads.
pub fn set_linear_is_expert<T: ModuleTree + ?Sized>(model: &mut T) -> Vec<String> {
    let mut marked = Vec::new();
    walk_mut(model, |node| {
        if node.kind().is_some_and(Kind::is_linear_family) && node.is_expert() {
            node.set_expert_flag(true);
            marked.push(node.path().to_string());
        }
    });
    marked
}

/// The distinct normalized paths of a walk, each with whether `cond` held and failed on it.
///
/// Normalized paths repeat across layers and experts, so they are stored once: a node costs one
/// hash of its segments and no allocation unless its normalized path is new.
#[derive(Default)]
struct DistinctPaths {
    hasher: RandomState,
    by_hash: HashMap<u64, Vec<usize>>,
    paths: Vec<DistinctPath>,
}

struct DistinctPath {
    /// The normalized segments: `None` is `<>`.
    segments: Vec<Option<String>>,
    matched: bool,
    unmatched: bool,
}

impl DistinctPaths {
    fn insert(&mut self, segments: &[Segment<'_>], matched: bool) {
        let mut hasher = self.hasher.build_hasher();
        for segment in segments {
            segment.normalized().hash(&mut hasher);
        }
        let candidates = self.by_hash.entry(hasher.finish()).or_default();
        let position = candidates.iter().copied().find(|&position| {
            let stored = &self.paths[position].segments;
            stored.len() == segments.len()
                && stored
                    .iter()
                    .zip(segments)
                    .all(|(stored, segment)| stored.as_deref() == segment.normalized())
        });
        let position = position.unwrap_or_else(|| {
            candidates.push(self.paths.len());
            self.paths.push(DistinctPath {
                segments: segments
                    .iter()
                    .map(|segment| segment.normalized().map(str::to_owned))
                    .collect(),
                matched: false,
                unmatched: false,
            });
            self.paths.len() - 1
        });
        let path = &mut self.paths[position];
        path.matched |= matched;
        path.unmatched |= !matched;
    }

    fn shortest_names(&self) -> Vec<String> {
        let others: Vec<&[Option<String>]> = self
            .paths
            .iter()
            .filter(|path| path.unmatched)
            .map(|path| path.segments.as_slice())
            .collect();
        let mut names: Vec<String> = Vec::new();
        for path in self.paths.iter().filter(|path| path.matched) {
            let name = shortest_unique_suffix(&path.segments, &others);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

fn shortest_unique_suffix(path: &[Option<String>], others: &[&[Option<String>]]) -> String {
    for len in 1..=path.len() {
        let tail = &path[path.len() - len..];
        if !others.iter().any(|other| other.ends_with(tail)) {
            return join(tail);
        }
    }
    format!("^{}", join(path))
}

fn join(segments: &[Option<String>]) -> String {
    let mut joined = String::new();
    for (position, segment) in segments.iter().enumerate() {
        if position > 0 {
            joined.push('.');
        }
        joined.push_str(segment.as_deref().unwrap_or(ANY_INDEX));
    }
    joined
}
