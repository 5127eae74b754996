//! Walking a module tree: every node, root first, parents before children, in declaration order.
//!
//! A walk reuses one path buffer and allocates nothing per node. [`walk`] gives shared access to
//! each [`Node`]; [`walk_mut`] gives a [`NodeMut`] that can downcast a leaf to its concrete type
//! and set its run-time expert flag. Generated impls and hand-written ones drive the walk through
//! the same handful of [`Walker`] calls: `enter_module`/`exit_module` around a module's fields,
//! `field` or `layer_field` per field, `enter_container`/`element`/`entry` for containers.

use core::any::Any;
use core::fmt;

use crate::kind::{Kind, Parallel};
use crate::path::{Path, Segment};
use crate::schema::{FieldSchema, Schema, Shape};
use crate::tree::{Field, ModuleTree, NodeInfo, Role};

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
    layers_at: Option<usize>,
    module: Option<&'n dyn Any>,
}

impl<'n, 'a> Node<'n, 'a> {
    /// The node's path from the root.
    #[must_use]
    #[inline]
    pub fn path(&self) -> Path<'n, 'a> {
        self.path
    }

    /// The static facts of the node's type or field.
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
        self.info.role
    }

    /// The kind of a leaf layer; `None` for modules and containers.
    #[must_use]
    #[inline]
    pub fn kind(&self) -> Option<Kind> {
        self.info.kind()
    }

    /// Whether the node is a leaf layer.
    #[must_use]
    #[inline]
    pub fn is_layer(&self) -> bool {
        self.kind().is_some()
    }

    /// Whether the node lies in an `#[expert]` subtree, or is a `grouped_linear` (always an expert).
    #[must_use]
    #[inline]
    pub fn is_expert(&self) -> bool {
        self.is_expert || self.kind() == Some(Kind::GroupedLinear)
    }

    /// Whether the layer is an output head (`#[layer(head)]`).
    #[must_use]
    #[inline]
    pub fn is_head(&self) -> bool {
        self.info.head
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
        match self.layers_at {
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
            .field("role", &self.info.role)
            .field("is_expert", &self.is_expert())
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

/// What a module or container changed on entry, restored by its exit call.
#[derive(Clone, Copy, Debug)]
#[must_use = "pass the scope to the matching `exit_*` call"]
pub struct Scope {
    expert: bool,
}

/// The walk's position: one reused path buffer and the flags inherited from above.
///
/// The path is `buffer[..depth]`. The buffer keeps the deepest path seen so far and is
/// overwritten in place: keeping the length outside the `Vec` means that reading the path of a
/// node never reloads, as one wide load, a length that was just stored — a store-forwarding stall
/// that cost several nanoseconds per node.
#[derive(Default)]
struct Cursor<'a> {
    buffer: Vec<Segment<'a>>,
    depth: usize,
    expert: bool,
    layers_at: Option<usize>,
}

/// What a field changed on entry.
struct FieldScope {
    len: usize,
    expert: bool,
    layers_at: Option<usize>,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn path(&self) -> &[Segment<'a>] {
        self.buffer.get(..self.depth).unwrap_or(&[])
    }

    #[inline]
    fn push(&mut self, segment: Segment<'a>) {
        if self.depth == self.buffer.len() {
            self.grow();
        }
        // The segment is written in place, never built in memory first and copied: a copy by
        // wide loads of a segment just stored by narrow ones stalls on store forwarding.
        if let Some(slot) = self.buffer.get_mut(self.depth) {
            *slot = segment;
        }
        self.depth += 1;
    }

    /// The first visit at a new depth: the buffer grows, a few times per walk.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        self.buffer.push(Segment::AnyIndex);
    }

    /// The names of a dotted `#[tree(rename)]`, or none for a newtype variant's field.
    #[inline(never)]
    fn push_names(&mut self, names: &'static [&'static str]) {
        for name in names {
            self.push(Segment::Name(name));
        }
    }

    #[inline]
    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    #[inline]
    fn node<'n>(&'n self, info: &'n NodeInfo, module: Option<&'n dyn Any>) -> Node<'n, 'a> {
        Node {
            path: Path::new(self.path()),
            info,
            is_expert: self.expert || info.expert,
            layers_at: self.layers_at,
            module,
        }
    }

    #[inline]
    fn enter(&mut self, info: &NodeInfo) -> Scope {
        let scope = Scope {
            expert: self.expert,
        };
        self.expert |= info.expert;
        scope
    }

    #[inline]
    fn exit(&mut self, scope: Scope) {
        self.expert = scope.expert;
    }

    #[inline]
    fn enter_field(&mut self, field: &Field) -> FieldScope {
        let scope = FieldScope {
            len: self.depth,
            expert: self.expert,
            layers_at: self.layers_at,
        };
        match (field.index, field.segments) {
            (Some(index), _) => self.push(Segment::Index(index)),
            (None, [name]) => self.push(Segment::Name(name)),
            (None, names) => self.push_names(names),
        }
        self.expert |= field.expert;
        if field.layers {
            self.layers_at = Some(self.depth);
        }
        scope
    }

    #[inline]
    fn exit_field(&mut self, scope: FieldScope) {
        self.depth = scope.len;
        self.expert = scope.expert;
        self.layers_at = scope.layers_at;
    }
}

/// Drives a shared walk.
///
/// Generated impls and hand-written ones report their nodes through a handful of calls:
/// `enter_module`/`exit_module` around a module's fields, `field` or `layer_field` per field,
/// `layer` for a leaf type, and `enter_container`/`element`/`entry`/`exit_container` for
/// containers.
pub struct Walker<'a, 'v> {
    cursor: Cursor<'a>,
    visit: &'v mut dyn FnMut(&Node<'_, 'a>),
}

impl<'a> Walker<'a, '_> {
    /// Reports a module node for `this`, then applies its `#[expert]` to the fields that follow.
    #[inline]
    pub fn enter_module<T: ModuleTree + ?Sized>(&mut self, info: &NodeInfo, this: &'a T) -> Scope {
        (self.visit)(&self.cursor.node(info, this.as_any()));
        self.cursor.enter(info)
    }

    /// Ends the module that `scope` came from.
    #[inline]
    pub fn exit_module(&mut self, scope: Scope) {
        self.cursor.exit(scope);
    }

    /// Reports a leaf layer: a type tagged `#[layer]`, whose fields are not walked.
    #[inline]
    pub fn layer<T: ModuleTree + ?Sized>(&mut self, info: &NodeInfo, this: &'a T) {
        (self.visit)(&self.cursor.node(info, this.as_any()));
    }

    /// Walks one field of a module.
    #[inline]
    pub fn field<T: ModuleTree + ?Sized>(&mut self, field: &Field, value: &'a T) {
        let scope = self.cursor.enter_field(field);
        value.walk(self);
        self.cursor.exit_field(scope);
    }

    /// Reports a field tagged `#[layer]` as a leaf, whatever its type.
    #[inline]
    pub fn layer_field<T: Any>(&mut self, field: &Field, value: &'a T) {
        let Some(info) = &field.layer else {
            return;
        };
        let scope = self.cursor.enter_field(field);
        (self.visit)(&self.cursor.node(info, Some(value)));
        self.cursor.exit_field(scope);
    }

    /// Reports a container node; its elements follow through [`element`](Self::element) or
    /// [`entry`](Self::entry).
    #[inline]
    pub fn enter_container(&mut self, info: &NodeInfo) -> Scope {
        (self.visit)(&self.cursor.node(info, None));
        self.cursor.enter(info)
    }

    /// Ends the container that `scope` came from.
    #[inline]
    pub fn exit_container(&mut self, scope: Scope) {
        self.cursor.exit(scope);
    }

    /// Walks the element at `index` of a container.
    #[inline]
    pub fn element<T: ModuleTree + ?Sized>(&mut self, index: usize, value: &'a T) {
        self.cursor.push(Segment::Index(index));
        value.walk(self);
        self.cursor.pop();
    }

    /// Walks the value under `key` of a map.
    #[inline]
    pub fn entry<T: ModuleTree + ?Sized>(&mut self, key: &'a str, value: &'a T) {
        self.cursor.push(Segment::Key(key));
        value.walk(self);
        self.cursor.pop();
    }
}

/// Drives a mutable walk, with the same calls as [`Walker`].
pub struct WalkerMut<'a, 'v> {
    cursor: Cursor<'a>,
    visit: &'v mut dyn FnMut(&mut NodeMut<'_, 'a>),
}

impl<'a> WalkerMut<'a, '_> {
    #[inline]
    fn report<'n>(
        &'n mut self,
        info: &'n NodeInfo,
        access: Option<&'n mut (dyn LayerAccess + 'n)>,
    ) {
        let mut node = NodeMut {
            node: self.cursor.node(info, None),
            access,
        };
        (self.visit)(&mut node);
    }

    /// Reports a module node for `this`, then applies its `#[expert]` to the fields that follow.
    #[inline]
    pub fn enter_module<T: ModuleTree>(&mut self, info: &NodeInfo, this: &mut T) -> Scope {
        self.report(info, Some(this));
        self.cursor.enter(info)
    }

    /// Ends the module that `scope` came from.
    #[inline]
    pub fn exit_module(&mut self, scope: Scope) {
        self.cursor.exit(scope);
    }

    /// Reports a leaf layer: a type tagged `#[layer]`, whose fields are not walked.
    #[inline]
    pub fn layer<T: ModuleTree>(&mut self, info: &NodeInfo, this: &mut T) {
        self.report(info, Some(this));
    }

    /// Walks one field of a module.
    #[inline]
    pub fn field<T: ModuleTree + ?Sized>(&mut self, field: &Field, value: &'a mut T) {
        let scope = self.cursor.enter_field(field);
        value.walk_mut(self);
        self.cursor.exit_field(scope);
    }

    /// Reports a field tagged `#[layer]` as a leaf, whatever its type.
    #[inline]
    pub fn layer_field<T: Any>(&mut self, field: &Field, value: &'a mut T) {
        let Some(info) = &field.layer else {
            return;
        };
        let scope = self.cursor.enter_field(field);
        self.report(info, Some(&mut ForeignLayer(value)));
        self.cursor.exit_field(scope);
    }

    /// Reports a container node; its elements follow.
    #[inline]
    pub fn enter_container(&mut self, info: &NodeInfo) -> Scope {
        self.report(info, None);
        self.cursor.enter(info)
    }

    /// Ends the container that `scope` came from.
    #[inline]
    pub fn exit_container(&mut self, scope: Scope) {
        self.cursor.exit(scope);
    }

    /// Walks the element at `index` of a container.
    #[inline]
    pub fn element<T: ModuleTree + ?Sized>(&mut self, index: usize, value: &'a mut T) {
        self.cursor.push(Segment::Index(index));
        value.walk_mut(self);
        self.cursor.pop();
    }

    /// Walks the value under `key` of a map.
    #[inline]
    pub fn entry<T: ModuleTree + ?Sized>(&mut self, key: &'a str, value: &'a mut T) {
        self.cursor.push(Segment::Key(key));
        value.walk_mut(self);
        self.cursor.pop();
    }

    /// Walks `value` read-only at the current path, as a shared walk: the nodes are reported with
    /// no mutable access. Used for `Arc` and `Rc`, whose contents cannot be borrowed mutably.
    #[inline]
    pub fn shared<T: ModuleTree + ?Sized>(&mut self, value: &'a T) {
        let visit = &mut *self.visit;
        let mut shared = Walker {
            cursor: core::mem::take(&mut self.cursor),
            visit: &mut |node: &Node<'_, 'a>| {
                let mut node = NodeMut {
                    node: Node {
                        module: None,
                        ..*node
                    },
                    access: None,
                };
                visit(&mut node);
            },
        };
        value.walk(&mut shared);
        self.cursor = shared.cursor;
    }
}

impl fmt::Debug for Walker<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Walker")
            .field("path", &format_args!("{}", Path::new(self.cursor.path())))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for WalkerMut<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalkerMut")
            .field("path", &format_args!("{}", Path::new(self.cursor.path())))
            .finish_non_exhaustive()
    }
}

/// Walks a static schema: every node a value of the type can have, with `<>` for every element
/// of a `Vec`, array or map key (`*`). An enum reports the nodes of all its variants.
fn walk_schema<'a>(
    schema: &'a Schema,
    cursor: &mut Cursor<'a>,
    visit: &mut dyn FnMut(&Node<'_, 'a>),
) {
    let scope = match &schema.info {
        Some(info) => {
            let transparent_enum = matches!(schema.shape, Shape::Variants(variants)
                if variants.iter().all(|variant| variant.transparent));
            if !transparent_enum {
                visit(&cursor.node(info, None));
            }
            cursor.enter(info)
        }
        None => Scope {
            expert: cursor.expert,
        },
    };
    match schema.shape {
        Shape::Leaf => {}
        Shape::Fields(fields) => walk_schema_fields(fields, cursor, visit),
        Shape::Variants(variants) => {
            for variant in variants {
                walk_schema_fields(variant.fields, cursor, visit);
            }
        }
        Shape::Sequence { element, .. } => {
            cursor.push(Segment::AnyIndex);
            walk_schema(element, cursor, visit);
            cursor.pop();
        }
        Shape::Tuple(elements) => {
            for (index, element) in elements.iter().enumerate() {
                cursor.push(Segment::Index(index));
                walk_schema(element, cursor, visit);
                cursor.pop();
            }
        }
        Shape::Map(value) => {
            cursor.push(Segment::AnyKey);
            walk_schema(value, cursor, visit);
            cursor.pop();
        }
        Shape::Transparent(inner) => walk_schema(inner, cursor, visit),
    }
    cursor.exit(scope);
}

fn walk_schema_fields<'a>(
    fields: &'a [FieldSchema],
    cursor: &mut Cursor<'a>,
    visit: &mut dyn FnMut(&Node<'_, 'a>),
) {
    for field in fields {
        let scope = cursor.enter_field(&field.field);
        walk_schema(field.schema, cursor, visit);
        cursor.exit_field(scope);
    }
}
