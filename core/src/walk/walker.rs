//! The calls through which a module reports its nodes: [`Walker`] for shared walks,
//! [`WalkerMut`] for walks that can reach each leaf mutably.

use core::any::Any;
use core::fmt;

use crate::path::{Path, Segment};
use crate::tree::{Field, ModuleTree, NodeInfo};
use crate::walk::cursor::{Cursor, Scope};
use crate::walk::{ForeignLayer, LayerAccess, Node, NodeMut};

/// Drives a shared walk.
///
/// Generated impls and hand-written ones report their nodes through a handful of calls:
/// `enter_module`/`exit_module` around a module's fields, `field` or `layer_field` per field,
/// `layer` for a leaf type, and `enter_container`/`element`/`entry`/`exit_container` for
/// containers.
pub struct Walker<'a, 'v> {
    pub(super) cursor: Cursor<'a>,
    pub(super) visit: &'v mut dyn FnMut(&Node<'_, 'a>),
}

impl<'a> Walker<'a, '_> {
    /// Reports a module node for `this`, then applies its `#[expert]` to the fields that follow.
    #[inline]
    pub fn enter_module<T: ModuleTree + ?Sized>(&mut self, info: &NodeInfo, this: &'a T) -> Scope {
        if !self.cursor.hides() {
            (self.visit)(&self.cursor.node(info, this.as_any()));
        }
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
        self.field_with(field, value, T::walk);
    }

    /// [`field`](Self::field) with the walk given as a function: the derive passes
    /// `<T as ModuleTree>::walk`, so that a type without an impl is reported once, at that path,
    /// with the same diagnostic as its schema.
    #[doc(hidden)]
    // Always: left to itself rustc keeps this out of line, called once per field, which cost a
    // fifth of a walk in the `walk` benchmark.
    #[inline(always)]
    pub fn field_with<T: ?Sized>(
        &mut self,
        field: &Field,
        value: &'a T,
        walk: fn(&'a T, &mut Walker<'a, '_>),
    ) {
        let scope = self.cursor.enter_field(field);
        if field.is_special() {
            let special = self.cursor.enter_special(field);
            walk(value, self);
            self.cursor.exit_special(special);
        } else {
            walk(value, self);
        }
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
        if !self.cursor.hides() {
            (self.visit)(&self.cursor.node(info, None));
        }
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
    pub(super) cursor: Cursor<'a>,
    pub(super) visit: &'v mut dyn FnMut(&mut NodeMut<'_, 'a>),
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
        if !self.cursor.hides() {
            self.report(info, Some(this));
        }
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
        self.field_with(field, value, T::walk_mut);
    }

    /// [`field`](Self::field) with the walk given as a function; see [`Walker::field_with`].
    #[doc(hidden)]
    #[inline(always)]
    pub fn field_with<T: ?Sized>(
        &mut self,
        field: &Field,
        value: &'a mut T,
        walk: fn(&'a mut T, &mut WalkerMut<'a, '_>),
    ) {
        let scope = self.cursor.enter_field(field);
        if field.is_special() {
            let special = self.cursor.enter_special(field);
            walk(value, self);
            self.cursor.exit_special(special);
        } else {
            walk(value, self);
        }
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
        if !self.cursor.hides() {
            self.report(info, None);
        }
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
