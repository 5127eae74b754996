//! Printing module trees the way PyTorch prints a model, folded so that a large model fits on a
//! screen.
//!
//! [`Tree::of`] builds the tree of anything that can be walked — a model, or a type's static
//! [`Schema`](crate::Schema) — and its [`Display`](core::fmt::Display) prints one line per node,
//! indented by depth, with the node's type, its layer kind and its flags
//! (`q_proj: Linear [linear]`, `gate_proj: Linear [linear, expert]`, `lm_head: Linear [linear,
//! head]`). Runs of consecutive container elements whose subtrees have the same shape are folded
//! into one line, with inclusive index ranges: `layers: 0..60 × DecoderLayer`, or, for a list whose
//! elements differ (an enum-mixed list), one line per run (`0..2 × Mlp`, `3..60 × DeepseekMoe`).
//! Two elements have the same shape when their subtrees agree on every label (indices aside), type,
//! kind, flag and detail. A schema shows `<>` for the elements of a container (`layers: <> ×
//! DecoderLayer`) and `*` for the values of a map; an enum's variants show as alternatives at the
//! same path (`mlp: Mlp (one of 3)`). An element whose shape was already printed in the same
//! container gets one line, `2: DecoderLayer (same as 0)`, without its subtree.
//!
//! [`Tree::to_json`] gives the same folded tree as JSON for tools, and [`Summary`] adds the
//! targets that [`find_all_linear_modules`](crate::find_all_linear_modules) and its siblings name,
//! and the expert layers.

use core::fmt::{self, Write as _};
use std::collections::HashMap;

// A fast, non-cryptographic hash: the keys are the tree's own labels and shapes.
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::kind::{Kind, Parallel};
use crate::path::{Path, Segment};
use crate::tree::Role;
use crate::walk::{Node, Walk, walk};

mod summary;

pub use summary::Summary;

/// The module tree of a model or schema, ready to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    roots: Vec<TreeNode>,
}

/// One node of a [`Tree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNode {
    label: String,
    index: Option<usize>,
    type_name: &'static str,
    role: Role,
    is_expert: bool,
    head: bool,
    parallel: Option<Parallel>,
    detail: Option<String>,
    /// Equal for two nodes exactly when their subtrees have the same shape (labels of index
    /// segments aside); comparable only within one tree.
    shape: u32,
    children: Vec<TreeNode>,
}

impl TreeNode {
    /// The path segments from the parent to this node, joined by `.` (`""` for a root).
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The index, when the node is a container element under one index segment.
    #[must_use]
    pub fn index(&self) -> Option<usize> {
        self.index
    }

    /// The node's type name.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Module, container or layer.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The kind of a leaf layer.
    #[must_use]
    pub fn kind(&self) -> Option<Kind> {
        match self.role {
            Role::Layer(kind) => Some(kind),
            Role::Module | Role::Container => None,
        }
    }

    /// Whether the node is, or lies in, a routed-expert subtree.
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

    /// Extra text printed after the type, such as a checkpoint's parameter shapes.
    #[must_use]
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The children, in walk order.
    #[must_use]
    pub fn children(&self) -> &[TreeNode] {
        &self.children
    }

    /// Whether `self` and `other`, two nodes of the same tree, have subtrees of the same shape.
    #[must_use]
    pub fn same_shape(&self, other: &TreeNode) -> bool {
        self.shape == other.shape
    }

    fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(kind) = self.kind() {
            flags.push(kind.name().to_owned());
        }
        if self.is_expert {
            flags.push("expert".to_owned());
        }
        if self.head {
            flags.push("head".to_owned());
        }
        if let Some(parallel) = self.parallel {
            flags.push(format!("parallel={parallel}"));
        }
        flags
    }
}

impl Tree {
    /// The tree of `model`, which may be a model or a type's [`Schema`](crate::Schema).
    #[must_use]
    pub fn of<T: Walk + ?Sized>(model: &T) -> Tree {
        Tree::with_detail(model, |_| None)
    }

    /// The tree of `model`, with `detail` giving extra text for a node, printed after its type
    /// like PyTorch's `Linear(in_features=…)`. Details take part in folding: elements whose
    /// details differ are not folded together.
    #[must_use]
    pub fn with_detail<T, F>(model: &T, mut detail: F) -> Tree
    where
        T: Walk + ?Sized,
        F: FnMut(&Node<'_, '_>) -> Option<String>,
    {
        let mut builder = Builder::default();
        walk(model, |node| {
            let detail = detail(node);
            builder.push(node, detail);
        });
        builder.finish()
    }

    /// The top-level nodes: one for a model, none for a value that is not a module, and one per
    /// variant for the schema of an enum whose variants add no node.
    #[must_use]
    pub fn roots(&self) -> &[TreeNode] {
        &self.roots
    }

    /// The number of lines the folded display takes.
    #[must_use]
    pub fn line_count(&self) -> usize {
        self.to_string().lines().count()
    }

    /// The folded tree as JSON: one object per node or run of folded elements, with `label`,
    /// `type`, `role`, `kind`, `expert`, `head`, `parallel`, `detail` and `children`; a folded run
    /// also has `first`, `last` (inclusive) and `count`. Unlike the text, a container keeps its
    /// one folded run as a child rather than sharing its line, and an element of a shape already
    /// printed keeps its subtree rather than `(same as …)`.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let roots: Vec<JsonNode<'_>> = fold(&self.roots)
            .into_iter()
            .map(|group| json_group(&group))
            .collect();
        serde_json::to_value(roots).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_children(&mut out, &self.roots, 0);
        f.write_str(&out)
    }
}

/// Whether the node at `ancestor` (a joined path) contains the one at `path`: a shorter path
/// that it starts with on a segment boundary; the root `""` contains all.
fn is_ancestor(ancestor: &str, path: &str) -> bool {
    ancestor.is_empty() && !path.is_empty()
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Builds the tree from a pre-order walk: a stack of the open ancestors of the current node.
#[derive(Default)]
struct Builder {
    /// The open ancestors: each one's path (joined), its number of segments, and its node.
    open: Vec<(String, usize, TreeNode)>,
    roots: Vec<TreeNode>,
    /// Labels and details, each stored once, so that a shape key holds ids, not copies.
    strings: FxHashMap<String, u32>,
    shapes: FxHashMap<ShapeKey, u32>,
}

#[derive(PartialEq, Eq, Hash)]
struct ShapeKey {
    label: Option<u32>,
    type_name: &'static str,
    role: Role,
    flags: (bool, bool, Option<Parallel>),
    detail: Option<u32>,
    children: Vec<u32>,
}

impl Builder {
    fn push(&mut self, node: &Node<'_, '_>, detail: Option<String>) {
        let segments = node.path().segments();
        let path = node.path().to_string();
        // An open node stays open only if it is an ancestor of this one by path: fields renamed
        // to `model.*` after an `lm_head` are not `lm_head`'s children, whatever their depth.
        while self
            .open
            .last()
            .is_some_and(|(open, _, _)| !is_ancestor(open, &path))
        {
            self.close();
        }
        let parent_depth = self.open.last().map_or(0, |(_, depth, _)| *depth);
        let own = &segments[parent_depth.min(segments.len())..];
        let index = match own {
            [Segment::Index(index)] => Some(*index),
            _ => None,
        };
        let tree_node = TreeNode {
            label: Path::new(own).to_owned_string(false),
            index,
            type_name: node.type_name(),
            role: node.role(),
            is_expert: node.is_expert(),
            head: node.is_head(),
            parallel: node.parallel(),
            detail,
            shape: 0,
            children: Vec::new(),
        };
        self.open.push((path, segments.len(), tree_node));
    }

    fn close(&mut self) {
        let Some((_, _, mut node)) = self.open.pop() else {
            return;
        };
        let key = ShapeKey {
            label: node.index.is_none().then(|| self.intern(&node.label)),
            type_name: node.type_name,
            role: node.role,
            flags: (node.is_expert, node.head, node.parallel),
            detail: node.detail.as_deref().map(|detail| self.intern(detail)),
            children: node.children.iter().map(|child| child.shape).collect(),
        };
        let next = u32::try_from(self.shapes.len()).unwrap_or(u32::MAX);
        node.shape = *self.shapes.entry(key).or_insert(next);
        match self.open.last_mut() {
            Some((_, _, parent)) => parent.children.push(node),
            None => self.roots.push(node),
        }
    }

    fn intern(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.strings.get(text) {
            return id;
        }
        let id = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.strings.insert(text.to_owned(), id);
        id
    }

    fn finish(mut self) -> Tree {
        while !self.open.is_empty() {
            self.close();
        }
        Tree { roots: self.roots }
    }
}

/// One printed line: a node, or a run of consecutive elements of the same shape, or one of
/// several alternatives at the same path (an enum's variants in a schema).
struct Group<'t> {
    node: &'t TreeNode,
    run: Option<(usize, usize, usize)>,
    alternative: Option<usize>,
}

/// Splits siblings into printed lines: consecutive index-labelled siblings of the same shape
/// fold into one run; siblings sharing a label are marked as alternatives.
fn fold(children: &[TreeNode]) -> Vec<Group<'_>> {
    // How many named children share each label (enum variants' fields may), counted once.
    let mut labels: HashMap<&str, usize> = HashMap::new();
    for child in children.iter().filter(|child| child.index.is_none()) {
        *labels.entry(child.label.as_str()).or_default() += 1;
    }
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut start = 0;
    while start < children.len() {
        let first = &children[start];
        let mut end = start + 1;
        if let Some(first_index) = first.index {
            while let Some(next) = children.get(end) {
                // Checked: an index segment may be `usize::MAX` (a checkpoint's name).
                let expected = first_index.checked_add(end - start);
                if expected.is_some() && next.index == expected && next.same_shape(first) {
                    end += 1;
                } else {
                    break;
                }
            }
        }
        let run = (end - start > 1).then(|| {
            let first_index = first.index.unwrap_or_default();
            (first_index, first_index + (end - start - 1), end - start)
        });
        let alternatives = match first.index {
            Some(_) => 0,
            None => labels.get(first.label.as_str()).copied().unwrap_or(0),
        };
        groups.push(Group {
            node: first,
            run,
            alternative: (alternatives > 1).then_some(alternatives),
        });
        start = end;
    }
    groups
}

fn write_children(out: &mut String, children: &[TreeNode], depth: usize) {
    // Elements of a shape already printed in this container are not printed again: a pattern
    // such as alternating dense and sparse layers then costs one line per element.
    let mut printed: HashMap<u32, String> = HashMap::new();
    for group in fold(children) {
        let mut same_as = None;
        if group.node.index.is_some() && !group.node.children.is_empty() {
            let name = match group.run {
                Some((first, last, _)) => format!("{first}..{last}"),
                None => one_line(&group.node.label).into_owned(),
            };
            same_as = printed.get(&group.node.shape).cloned();
            printed.entry(group.node.shape).or_insert(name);
        }
        write_group(out, &group, depth, same_as.as_deref());
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// Writes a group's line and, unless it repeats the shape first printed as `same_as`, its subtree.
fn write_group(out: &mut String, group: &Group<'_>, depth: usize, same_as: Option<&str>) {
    let node = group.node;
    indent(out, depth);
    match group.run {
        Some((first, last, _)) => {
            let _ = write!(out, "{first}..{last} × ");
        }
        None if !node.label.is_empty() => {
            let _ = write!(out, "{}: ", one_line(&node.label));
        }
        None => {}
    }
    if let Some(first) = same_as {
        write_node_line(out, node, group.alternative);
        out.pop();
        let _ = writeln!(out, " (same as {first})");
        return;
    }
    // A container whose elements fold into one line shares it: `layers: 0..60 × DecoderLayer`.
    let element_groups = group_of_container(node);
    if let Some(element) = element_groups
        .as_ref()
        .and_then(|groups| match groups.as_slice() {
            [only] if only.run.is_some() || is_wildcard(&only.node.label) => Some(only),
            _ => None,
        })
    {
        match element.run {
            Some((first, last, _)) => {
                let _ = write!(out, "{first}..{last} × ");
            }
            None => {
                let _ = write!(out, "{} × ", one_line(&element.node.label));
            }
        }
        write_node_line(out, element.node, element.alternative);
        write_children(out, &element.node.children, depth + 1);
        return;
    }
    write_node_line(out, node, group.alternative);
    write_children(out, &node.children, depth + 1);
}

fn group_of_container(node: &TreeNode) -> Option<Vec<Group<'_>>> {
    (node.role == Role::Container && !node.children.is_empty()).then(|| fold(&node.children))
}

fn is_wildcard(label: &str) -> bool {
    label == crate::path::ANY_INDEX || label == crate::path::ANY_KEY
}

/// `text` on one line: its control characters (a line break in a tensor's name) escaped as Rust
/// writes them (`\n`), so that a name read from a file cannot break the tree's lines, or an
/// error's, or fake one.
pub(crate) fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    std::borrow::Cow::Owned(line)
}

fn write_node_line(out: &mut String, node: &TreeNode, alternative: Option<usize>) {
    out.push_str(node.type_name);
    if let Some(detail) = &node.detail {
        let _ = write!(out, "({})", one_line(detail));
    }
    let flags = node.flags();
    if !flags.is_empty() {
        let _ = write!(out, " [{}]", flags.join(", "));
    }
    if let Some(count) = alternative {
        let _ = write!(out, " (one of {count})");
    }
    if node.role == Role::Container && node.children.is_empty() {
        out.push_str(" (empty)");
    }
    out.push('\n');
}

#[derive(Serialize)]
struct JsonNode<'t> {
    label: &'t str,
    #[serde(skip_serializing_if = "Option::is_none")]
    first: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(rename = "type")]
    type_name: &'t str,
    role: &'static str,
    kind: Option<&'static str>,
    expert: bool,
    head: bool,
    parallel: Option<&'static str>,
    detail: Option<&'t str>,
    children: Vec<JsonNode<'t>>,
}

fn json_group<'t>(group: &Group<'t>) -> JsonNode<'t> {
    let node = group.node;
    JsonNode {
        label: &node.label,
        first: group.run.map(|(first, _, _)| first),
        last: group.run.map(|(_, last, _)| last),
        count: group.run.map(|(_, _, count)| count),
        type_name: node.type_name,
        role: match node.role {
            Role::Module => "module",
            Role::Container => "container",
            Role::Layer(_) => "layer",
        },
        kind: node.kind().map(Kind::name),
        expert: node.is_expert,
        head: node.head,
        parallel: node.parallel.map(Parallel::name),
        detail: node.detail.as_deref(),
        children: fold(&node.children)
            .into_iter()
            .map(|child| json_group(&child))
            .collect(),
    }
}
