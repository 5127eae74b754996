//! Walking a module tree: every node, root first, parents before children, in declaration order.
//!
//! A walk reuses one path buffer and allocates nothing per node. [`walk`] gives shared access to
//! each [`Node`]; [`walk_mut`] gives a [`NodeMut`] that can downcast a leaf to its concrete type
//! and set its run-time expert flag. Generated impls and hand-written ones drive the walk through
//! the same handful of [`Walker`] calls: `enter_module`/`exit_module` around a module's fields,
//! `field` or `layer_field` per field, `enter_container`/`element`/`entry` for containers.

use core::any::Any;
use core::fmt;

mod cursor;
mod schema;
mod walker;

pub use cursor::Scope;
pub use walker::{Walker, WalkerMut};

use crate::kind::{Expertise, Kind, Parallel};
use crate::path::{Path, Segment};
use crate::schema::Schema;
use crate::tree::{ModuleTree, NodeInfo, Role};
use cursor::Cursor;
use schema::walk_schema;

/// Something whose nodes can be walked: a model (any [`ModuleTree`]) or a type's static
/// [`Schema`], whose container elements show as `<>` and whose enums show every variant.
pub trait Walk {
    /// Calls `visit` on every node, root first, parents before children.
    fn walk_nodes<'a>(&'a self, visit: &mut dyn FnMut(&Node<'_, 'a>));
}

impl<T: ModuleTree + ?Sized> Walk for T {
    fn walk_nodes<'a>(&'a self, visit: &mut dyn FnMut(&Node<'_, 'a>)) {
        let mut walker = Walker {
            cursor: Cursor::default(),
            visit,
        };
        self.walk(&mut walker);
    }
}

impl Walk for Schema {
    fn walk_nodes<'a>(&'a self, visit: &mut dyn FnMut(&Node<'_, 'a>)) {
        walk_schema(self, &mut Cursor::default(), visit);
    }
}

/// Calls `visit` on every node of `model` (or of a [`Schema`]), root first, parents before
/// children.
///
/// ```
/// use moduletree::ModuleTree;
///
/// #[derive(ModuleTree)]
/// struct Block {
///     #[layer(kind = "linear")]
///     proj: [f32; 4],
/// }
///
/// let mut paths = Vec::new();
/// moduletree::walk(&Block { proj: [0.0; 4] }, |node| paths.push(node.path().to_string()));
/// assert_eq!(paths, ["", "proj"]);
/// ```
pub fn walk<'a, T: Walk + ?Sized>(model: &'a T, mut visit: impl FnMut(&Node<'_, 'a>)) {
    model.walk_nodes(&mut visit);
}

/// Calls `visit` on every node of `model` with mutable access to the leaves that offer it.
pub fn walk_mut<'a, T: ModuleTree + ?Sized>(
    model: &'a mut T,
    mut visit: impl FnMut(&mut NodeMut<'_, 'a>),
) {
    let mut walker = WalkerMut {
        cursor: Cursor::default(),
        visit: &mut visit,
    };
    model.walk_mut(&mut walker);
}

/// One node of a walk: its path and what is known of it.
#[derive(Clone, Copy)]
pub struct Node<'n, 'a> {
    path: Path<'n, 'a>,
    info: &'n NodeInfo,
    is_expert: bool,
    is_shared: bool,
    /// The roles its field gives the node (`#[layer(head)]`, `#[layer(router)]`), applied to a
    /// layer only.
    roles: cursor::Roles,
    /// The depth of the innermost `#[tree(layers)]` container, `cursor::NO_LAYERS` for none: a
    /// plain word, cheaper to write per node than an `Option`.
    layers_at: usize,
    module: Option<&'n dyn Any>,
    /// How many leading segments of the path are the previous node's, unchanged since it was
    /// reported (a lower bound).
    unchanged: usize,
}

impl<'n, 'a> Node<'n, 'a> {
    /// How many leading segments of this node's path are those of the node reported just before
    /// it in the same walk, unchanged (a lower bound; `0` for the first node).
    #[inline]
    pub(crate) fn unchanged_prefix(&self) -> usize {
        self.unchanged
    }

    /// The node's path from the root.
    #[must_use]
    #[inline]
    pub fn path(&self) -> Path<'n, 'a> {
        self.path
    }

    /// The static facts of the node's type or field, as its type declares them: the roles its
    /// field gives it (`#[layer(head)]`, `#[layer(router)]`) are in [`is_head`](Self::is_head),
    /// [`kind`](Self::kind) and [`role`](Self::role).
    #[must_use]
    #[inline]
    pub fn info(&self) -> &'n NodeInfo {
        self.info
    }

    /// The type's name without generics, or the container's (`"Vec"`, `"BTreeMap"`, …).
    #[must_use]
    #[inline]
    pub fn type_name(&self) -> &'static str {
        self.info.type_name
    }

    /// Module, container or layer.
    #[must_use]
    #[inline]
    pub fn role(&self) -> Role {
        match self.kind() {
            Some(kind) => Role::Layer(kind),
            None => self.info.role,
        }
    }

    /// The kind of a leaf layer (`router` when its field says `#[layer(router)]`); `None` for
    /// modules and containers.
    #[must_use]
    #[inline]
    pub fn kind(&self) -> Option<Kind> {
        match self.info.kind() {
            Some(_) if self.roles.router => Some(Kind::Router),
            kind => kind,
        }
    }

    /// Whether the node is a leaf layer.
    #[must_use]
    #[inline]
    pub fn is_layer(&self) -> bool {
        self.kind().is_some()
    }

    /// Whether the node lies in an `#[expert]` subtree, or is a `grouped_linear` (always an expert).
    /// Routed experts only: a shared expert is not an expert in this sense (it is replicated, not
    /// expert-parallel).
    #[must_use]
    #[inline]
    pub fn is_expert(&self) -> bool {
        self.is_expert || self.kind() == Some(Kind::GroupedLinear)
    }

    /// Whether the node lies in an `#[expert(shared)]` subtree and in no routed one: a shared
    /// expert, which every token passes through.
    #[must_use]
    #[inline]
    pub fn is_shared_expert(&self) -> bool {
        self.is_shared && !self.is_expert()
    }

    /// Whether the node is a routed expert, a shared expert, or neither.
    #[must_use]
    #[inline]
    pub fn expertise(&self) -> Expertise {
        if self.is_expert() {
            Expertise::Routed
        } else if self.is_shared {
            Expertise::Shared
        } else {
            Expertise::None
        }
    }

    /// Whether the layer is an output head (`#[layer(head)]` on its type or its field).
    #[must_use]
    #[inline]
    pub fn is_head(&self) -> bool {
        self.info.head || (self.roles.head && self.info.kind().is_some())
    }

    /// The layer's tensor-parallel style (`#[layer(parallel = "...")]`).
    #[must_use]
    #[inline]
    pub fn parallel(&self) -> Option<Parallel> {
        self.info.parallel
    }

    /// The layer index of the node: the index under the container marked `#[tree(layers)]` when
    /// the node lies below one, otherwise the first index segment of its path.
    #[must_use]
    #[inline]
    pub fn layer_index(&self) -> Option<usize> {
        let segments = self.path.segments();
        match (self.layers_at != cursor::NO_LAYERS).then_some(self.layers_at) {
            Some(at) => match segments.get(at) {
                Some(Segment::Index(index)) => Some(*index),
                _ => None,
            },
            None => segments
                .iter()
                .find_map(|segment| match segment {
                    Segment::Index(index) => Some(Some(*index)),
                    Segment::AnyIndex => Some(None),
                    Segment::Name(_) | Segment::Key(_) | Segment::AnyKey => None,
                })
                .flatten(),
        }
    }

    /// The node's value as its concrete type, when the type offers it (see
    /// [`ModuleTree::as_any`]).
    #[must_use]
    #[inline]
    pub fn downcast_ref<T: Any>(&self) -> Option<&'n T> {
        self.module?.downcast_ref()
    }
}

impl fmt::Debug for Node<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("path", &format_args!("{}", self.path))
            .field("type_name", &self.info.type_name)
            .field("role", &self.role())
            .field("is_expert", &self.is_expert())
            .field("is_shared_expert", &self.is_shared_expert())
            .finish_non_exhaustive()
    }
}

/// One node of a mutable walk. Derefs to [`Node`] for its path and facts.
pub struct NodeMut<'n, 'a> {
    node: Node<'n, 'a>,
    access: Option<&'n mut (dyn LayerAccess + 'n)>,
}

impl<'n, 'a> NodeMut<'n, 'a> {
    /// The node's value as its concrete type, when the type offers it (see
    /// [`ModuleTree::as_any_mut`]; a field tagged `#[layer]` always does).
    #[inline]
    pub fn downcast_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.access.as_mut()?.any_mut()?.downcast_mut()
    }

    /// Sets the run-time expert flag of a leaf that holds one; `false` when it holds none.
    #[inline]
    pub fn set_expert_flag(&mut self, expert: bool) -> bool {
        match self.access.as_mut().and_then(|access| access.expert_flag()) {
            Some(flag) => {
                *flag = expert;
                true
            }
            None => false,
        }
    }
}

impl<'n, 'a> core::ops::Deref for NodeMut<'n, 'a> {
    type Target = Node<'n, 'a>;

    fn deref(&self) -> &Self::Target {
        &self.node
    }
}

impl fmt::Debug for NodeMut<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.node, f)
    }
}

/// Mutable access to a leaf, object-safe so that one walker serves every type.
trait LayerAccess {
    fn any_mut(&mut self) -> Option<&mut dyn Any>;
    fn expert_flag(&mut self) -> Option<&mut bool>;
}

impl<T: ModuleTree> LayerAccess for T {
    fn any_mut(&mut self) -> Option<&mut dyn Any> {
        self.as_any_mut()
    }

    fn expert_flag(&mut self) -> Option<&mut bool> {
        self.expert_flag_mut()
    }
}

/// A field tagged `#[layer]` whose type need not implement [`ModuleTree`].
struct ForeignLayer<'x, T>(&'x mut T);

impl<T: Any> LayerAccess for ForeignLayer<'_, T> {
    fn any_mut(&mut self) -> Option<&mut dyn Any> {
        Some(self.0)
    }

    fn expert_flag(&mut self) -> Option<&mut bool> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::path::Segment;
    use crate::{ModuleTree, Walk};

    #[derive(ModuleTree)]
    #[tree(crate = crate, register = false)]
    #[layer(kind = "linear")]
    struct Leaf;

    #[derive(ModuleTree)]
    #[tree(crate = crate, register = false)]
    struct Inner {
        first: Leaf,
        second: Vec<Leaf>,
    }

    #[derive(ModuleTree)]
    #[tree(crate = crate, register = false)]
    struct Block {
        a: Leaf,
        #[tree(rename = "x.y")]
        b: Vec<Vec<Leaf>>,
        c: Option<Leaf>,
        d: BTreeMap<String, Inner>,
        #[tree(flatten)]
        e: Inner,
        f: (Leaf, Inner),
    }

    fn block() -> Block {
        let inner = || Inner {
            first: Leaf,
            second: vec![Leaf, Leaf],
        };
        Block {
            a: Leaf,
            b: vec![vec![Leaf, Leaf], vec![], vec![Leaf]],
            c: Some(Leaf),
            d: [("k".to_owned(), inner()), ("l".to_owned(), inner())].into(),
            e: inner(),
            f: (Leaf, inner()),
        }
    }

    /// Checks that every node's `unchanged_prefix` is a true lower bound: its path begins with
    /// that many segments of the previous node's.
    fn check(model: &(impl Walk + ?Sized)) -> usize {
        let mut previous: Vec<Segment<'_>> = Vec::new();
        let mut nodes = 0;
        model.walk_nodes(&mut |node| {
            let segments = node.path().segments();
            let unchanged = node.unchanged_prefix();
            assert!(unchanged <= segments.len() && unchanged <= previous.len());
            assert_eq!(
                segments[..unchanged],
                previous[..unchanged],
                "at {}",
                node.path()
            );
            previous = segments.to_vec();
            nodes += 1;
        });
        nodes
    }

    #[test]
    fn unchanged_prefix_is_a_lower_bound() {
        let mut model = vec![block(), block()];
        assert!(check(&model) > 40);
        assert!(check(&<Vec<Block> as ModuleTree>::SCHEMA) > 10);
        let mut previous: Vec<String> = Vec::new();
        crate::walk_mut(&mut model, |node| {
            let segments: Vec<String> = node
                .path()
                .segments()
                .iter()
                .map(ToString::to_string)
                .collect();
            let unchanged = node.unchanged_prefix();
            assert_eq!(segments[..unchanged], previous[..unchanged]);
            previous = segments;
        });
    }
}
