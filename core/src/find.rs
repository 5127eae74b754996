//! The reference functions: `named_modules` and the `find_layers` family, done right.
//!
//! `find_layers` names the nodes where a condition holds by the shortest run of trailing
//! *normalized* segments that no other node's normalized path ends with, so that the names are
//! unambiguous LoRA targets: one name per module across all layers, never a bare index, never a
//! collision between `proj` and `out_proj` (segments are compared whole). A name never starts
//! with an index (`experts.<>.up_proj`, not `<>.up_proj`), which would name the elements of
//! every list. A name that even its full path cannot make unique is returned anchored at the root
//! (`^model.layers.<>.q_proj`). Results are distinct and in walk order.

use std::fmt;
use std::sync::Arc;

// A fast, non-cryptographic hash: the keys are a model's own path segments.
use rustc_hash::FxHashMap;

use crate::kind::{Kind, Parallel};
use crate::path::{ANY_INDEX, JoinedPath, Path, Segment};
use crate::tree::{ModuleTree, Role};
use crate::walk::{Node, Walk, walk, walk_mut};

/// One node of [`named_modules`], owned; read with the same accessors as a walked [`Node`].
//
// Kept small (96 bytes, from 128): `named_modules` of a large model allocates one record per node, and a
// list past glibc's largest mmap threshold (32 MiB: 300,000 records of 128 bytes) is mapped
// afresh and faulted in on every call. The path has exactly its length, so that it is boxed
// without a reallocation. The role is not stored: it follows from the kind and
// whether the node is a container.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NamedModule {
    path: Box<str>,
    normalized: Arc<str>,
    type_name: &'static str,
    kind: Option<Kind>,
    container: bool,
    is_expert: bool,
    head: bool,
    parallel: Option<Parallel>,
    layer_index: Option<usize>,
}

impl NamedModule {
    /// The owned record of a walked node.
    #[must_use]
    #[inline]
    pub fn of(node: &Node<'_, '_>) -> Self {
        let path = node.path();
        NamedModule::with_parts(
            node,
            path.to_owned_string(false).into_boxed_str(),
            path.to_owned_string(true).into(),
        )
    }

    /// The path, joined by `.`; `""` for the root.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path with every index as `<>`, shared by every module with the same normalized path
    /// (the same projection in every layer).
    #[must_use]
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The type's name without generics.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Module, container or layer.
    #[must_use]
    pub fn role(&self) -> Role {
        match self.kind {
            Some(kind) => Role::Layer(kind),
            None if self.container => Role::Container,
            None => Role::Module,
        }
    }

    /// The kind of a leaf layer.
    #[must_use]
    pub fn kind(&self) -> Option<Kind> {
        self.kind
    }

    /// Whether the node is a leaf layer.
    #[must_use]
    pub fn is_layer(&self) -> bool {
        self.kind.is_some()
    }

    /// Whether the node lies in an `#[expert]` subtree (or is a `grouped_linear`).
    #[must_use]
    pub fn is_expert(&self) -> bool {
        self.is_expert
    }

    /// Whether the layer is an output head.
    #[must_use]
    pub fn is_head(&self) -> bool {
        self.head
    }

    /// The layer's tensor-parallel style.
    #[must_use]
    pub fn parallel(&self) -> Option<Parallel> {
        self.parallel
    }

    /// The layer index (see [`Node::layer_index`]).
    #[must_use]
    pub fn layer_index(&self) -> Option<usize> {
        self.layer_index
    }

    #[inline]
    fn with_parts(node: &Node<'_, '_>, path: Box<str>, normalized: Arc<str>) -> Self {
        let kind = node.kind();
        NamedModule {
            path,
            normalized,
            type_name: node.type_name(),
            kind,
            container: kind.is_none() && node.role() == Role::Container,
            is_expert: node.is_expert(),
            head: node.is_head(),
            parallel: node.parallel(),
            layer_index: node.layer_index(),
        }
    }
}

const _: () = assert!(size_of::<NamedModule>() <= 96);

impl fmt::Debug for NamedModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedModule")
            .field("path", &self.path)
            .field("normalized", &self.normalized)
            .field("type_name", &self.type_name)
            .field("role", &self.role())
            .field("kind", &self.kind)
            .field("is_expert", &self.is_expert)
            .field("head", &self.head)
            .field("parallel", &self.parallel)
            .field("layer_index", &self.layer_index)
            .finish()
    }
}

/// Every node of `model`, like PyTorch's `named_modules()`: the root (`""`) first, parents before
/// children, fields in declaration order.
///
/// `model` may also be a type's static [`Schema`](crate::Schema) (`&Llama::SCHEMA`): its nodes
/// are every node a value of the type can have, with `<>` for the elements of each container.
#[must_use]
pub fn named_modules<T: Walk + ?Sized>(model: &T) -> Vec<NamedModule> {
    // Counting first costs one walk (a few nanoseconds per node) and saves growing, and copying,
    // a list of records that is several megabytes for a large model.
    let mut count = 0_usize;
    walk(model, |_| count += 1);
    let mut modules = Vec::with_capacity(count);
    let mut normalized = SharedNormalized::default();
    // The joined path, kept from one node to the next: only the segments that changed are
    // written again.
    let mut path = JoinedPath::default();
    walk(model, |node| {
        let segments = node.path().segments();
        let shared = normalized.get(segments, node.unchanged_prefix());
        path.update(segments, node.unchanged_prefix());
        modules.push(NamedModule::with_parts(
            node,
            path.text.as_str().into(),
            shared,
        ));
    });
    modules
}

/// The normalized paths of a walk's nodes, each distinct one built once and shared: they repeat
/// across layers and experts. Consecutive nodes share most of their path, so a lookup costs a
/// comparison with the previous path and usually one trie step.
#[derive(Default)]
pub(crate) struct SharedNormalized<'a> {
    paths: DistinctPaths<'a>,
    texts: Vec<Option<Arc<str>>>,
}

impl<'a> SharedNormalized<'a> {
    /// The normalized text of the path made of `segments`, whose first `unchanged` segments are
    /// those of the previous call's (see [`DistinctPaths::insert`]; `0` when unknown).
    pub(crate) fn get(&mut self, segments: &[Segment<'a>], unchanged: usize) -> Arc<str> {
        let id = self.paths.insert(segments, unchanged, false) as usize;
        if self.texts.len() <= id {
            self.texts.resize(id + 1, None);
        }
        Arc::clone(
            self.texts[id].get_or_insert_with(|| Path::new(segments).to_owned_string(true).into()),
        )
    }
}

/// The names of the nodes of `model` where `cond` holds, each as the shortest run of trailing
/// normalized segments that names no node where `cond` is false.
///
/// Let *others* be the normalized paths of every node where `cond` is false (root and containers
/// included). For each node where `cond` holds, in walk order, the result keeps the shortest
/// trailing run of its normalized path that no path in *others* ends with, segment by segment,
/// widened to start at a name rather than an index (`experts.<>.up_proj`, `layers.<>`); if even
/// the whole normalized path is the tail of another, it is returned anchored at the root
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
        paths.insert(node.path().segments(), node.unchanged_prefix(), matched);
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

/// A normalized segment: the text of a name or key, `None` for an index (`<>`).
type Normalized<'a> = Option<&'a str>;

/// The distinct normalized paths of a walk, as a trie, each with whether `cond` held and failed
/// on it.
///
/// Normalized paths repeat across layers and experts, so they are stored once. Consecutive nodes
/// of a walk share most of their path, so a node costs a comparison of its segments with the
/// previous node's and one trie lookup per segment that differs (usually one), and no allocation
/// unless its normalized path is new.
#[derive(Default)]
struct DistinctPaths<'a> {
    /// Trie nodes; `0` is the root (the empty path).
    trie: Vec<TrieNode<'a>>,
    /// The children of trie nodes beyond their first [`INLINE_CHILDREN`].
    children: FxHashMap<(u32, Normalized<'a>), u32>,
    /// The previous node's segments, normalized, each with the trie node of the path up to it:
    /// `previous[k].1` is the trie node of the first `k + 1` segments. Only the first `depth`
    /// entries are the previous path; the rest are left over from deeper paths and overwritten
    /// in place, so that the length is never stored and reloaded per segment (as with the
    /// walk's own path buffer).
    previous: Vec<(Normalized<'a>, u32)>,
    depth: usize,
    /// The trie nodes where `cond` held, in first-seen order.
    matched: Vec<u32>,
}

struct TrieNode<'a> {
    parent: u32,
    segment: Normalized<'a>,
    depth: u32,
    matched: bool,
    unmatched: bool,
    /// The first children, searched in order: most modules have a handful, and a scan that
    /// compares names by address first beats hashing them. Further children are in the map.
    children: Vec<(Normalized<'a>, u32)>,
}

/// How many children of a trie node are searched by a scan before the map.
const INLINE_CHILDREN: usize = 16;

impl<'a> TrieNode<'a> {
    fn new(parent: u32, segment: Normalized<'a>, depth: u32) -> Self {
        TrieNode {
            parent,
            segment,
            depth,
            matched: false,
            unmatched: false,
            children: Vec::new(),
        }
    }
}

impl<'a> DistinctPaths<'a> {
    /// Records a node's path and whether `cond` held on it; returns the trie node of its
    /// normalized path.
    ///
    /// The first `unchanged` segments are known to be those of the previous call's path (the
    /// walk says so: [`Node::unchanged_prefix`]), so only the rest is compared; `0` compares all.
    fn insert(&mut self, segments: &[Segment<'a>], unchanged: usize, matched: bool) -> u32 {
        if self.trie.is_empty() {
            self.trie.push(TrieNode::new(0, None, 0));
        }
        let known = unchanged.min(self.depth).min(segments.len());
        let mut common = known;
        let shared = self.depth.min(segments.len());
        while common < shared
            && same(
                self.previous.get(common).and_then(|previous| previous.0),
                segments[common].normalized(),
            )
        {
            common += 1;
        }
        let mut id = match common.checked_sub(1) {
            Some(last) => self.previous.get(last).map_or(0, |previous| previous.1),
            None => 0,
        };
        for (at, segment) in segments.iter().enumerate().skip(common) {
            let segment = segment.normalized();
            id = self.child(id, segment);
            match self.previous.get_mut(at) {
                Some(slot) => *slot = (segment, id),
                None => self.previous.push((segment, id)),
            }
        }
        self.depth = segments.len();
        // Stored only when it changes: a node's flags are nearly always set already, and a store
        // on every call kept its cache line busy for the next node's read.
        let node = &mut self.trie[id as usize];
        if matched {
            if !node.matched {
                node.matched = true;
                self.matched.push(id);
            }
        } else if !node.unmatched {
            node.unmatched = true;
        }
        id
    }

    fn child(&mut self, parent: u32, segment: Normalized<'a>) -> u32 {
        let node = &self.trie[parent as usize];
        // By address first: a field's name is one `&'static str` wherever it appears, so equal
        // names nearly always share it, and siblings of one length (`gate_proj`, `down_proj`)
        // are then told apart without comparing their bytes.
        let by_address = node
            .children
            .iter()
            .find(|(child, _)| match (*child, segment) {
                (Some(child), Some(segment)) => {
                    child.as_ptr() == segment.as_ptr() && child.len() == segment.len()
                }
                (None, None) => true,
                _ => false,
            });
        if let Some(&(_, id)) = by_address.or_else(|| {
            node.children
                .iter()
                .find(|(child, _)| same(*child, segment))
        }) {
            return id;
        }
        let next = u32::try_from(self.trie.len()).unwrap_or(u32::MAX);
        let id = if node.children.len() < INLINE_CHILDREN {
            self.trie[parent as usize].children.push((segment, next));
            next
        } else {
            *self.children.entry((parent, segment)).or_insert(next)
        };
        if id == next {
            let depth = self.trie[parent as usize].depth + 1;
            self.trie.push(TrieNode::new(parent, segment, depth));
        }
        id
    }

    /// The segments of a trie node's path, root first.
    fn segments(&self, mut id: u32) -> Vec<Normalized<'a>> {
        let mut segments = Vec::with_capacity(self.trie[id as usize].depth as usize);
        while id != 0 {
            let node = &self.trie[id as usize];
            segments.push(node.segment);
            id = node.parent;
        }
        segments.reverse();
        segments
    }

    fn shortest_names(&self) -> Vec<String> {
        // Every tail of every path where `cond` failed, as a trie read from the last segment.
        let mut tails = FxHashMap::default();
        for (id, node) in self.trie.iter().enumerate() {
            if !node.unmatched {
                continue;
            }
            let mut tail = 0_u32;
            let mut id = id;
            while id != 0 {
                let node = &self.trie[id];
                let next = u32::try_from(tails.len() + 1).unwrap_or(u32::MAX);
                tail = *tails.entry((tail, node.segment)).or_insert(next);
                id = node.parent as usize;
            }
        }
        let mut names: Vec<String> = Vec::new();
        for &id in &self.matched {
            let path = self.segments(id);
            let name = shortest_unique_tail(&path, &tails);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// The shortest tail of `path` that is no tail of another path (`tails`), widened to start at a
/// name: a bare index such as `<>` or `<>.up_proj` would name the elements of every list. A path
/// whose every tail is taken, or which starts with an index at the root, is anchored (`^…`).
fn shortest_unique_tail(
    path: &[Normalized<'_>],
    tails: &FxHashMap<(u32, Normalized<'_>), u32>,
) -> String {
    let mut tail = 0_u32;
    let mut unique = None;
    for (taken, segment) in path.iter().rev().enumerate() {
        match tails.get(&(tail, *segment)) {
            Some(&next) => tail = next,
            None => {
                unique = Some(taken + 1);
                break;
            }
        }
    }
    let Some(len) = unique else {
        return format!("^{}", join(path));
    };
    let mut start = path.len() - len;
    while start > 0 && path[start].is_none() {
        start -= 1;
    }
    if start == 0 && path.first().is_some_and(Option::is_none) {
        return format!("^{}", join(path));
    }
    join(&path[start..])
}

/// Whether two normalized segments are equal; names from the same `&'static str` compare by
/// address first.
#[inline]
fn same(left: Normalized<'_>, right: Normalized<'_>) -> bool {
    match (left, right) {
        (None, None) => true,
        (Some(left), Some(right)) => {
            (left.as_ptr() == right.as_ptr() && left.len() == right.len()) || left == right
        }
        _ => false,
    }
}

fn join(segments: &[Normalized<'_>]) -> String {
    let mut joined = String::new();
    for (position, segment) in segments.iter().enumerate() {
        if position > 0 {
            joined.push('.');
        }
        joined.push_str(segment.unwrap_or(ANY_INDEX));
    }
    joined
}
