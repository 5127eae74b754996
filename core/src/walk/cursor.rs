//! The walk's position: the reused path buffer, the inherited flags, and the scopes that
//! restore them.

use core::any::Any;

use crate::path::{Path, Segment};
use crate::tree::{Field, NodeInfo};
use crate::walk::Node;

/// What a module or container changed on entry, restored by its exit call.
#[derive(Clone, Copy, Debug)]
#[must_use = "pass the scope to the matching `exit_*` call"]
pub struct Scope {
    pub(super) inherited: Inherited,
}

/// The flags a node inherits from above: inside a routed expert, inside a shared expert.
///
/// A whole word, stored and loaded whole. Small fields side by side are read together as one
/// wider load; when the walk has just stored them one by one, that load stalls on store
/// forwarding, which cost a third of a walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inherited(usize);

impl Inherited {
    const EXPERT: usize = 1;
    const SHARED: usize = 2;

    /// The flags `expert` and `shared` set.
    #[inline(always)]
    pub(super) const fn of(expert: bool, shared: bool) -> Inherited {
        Inherited((expert as usize * Inherited::EXPERT) | (shared as usize * Inherited::SHARED))
    }

    #[inline(always)]
    pub(super) const fn with(self, other: Inherited) -> Inherited {
        Inherited(self.0 | other.0)
    }

    #[inline(always)]
    pub(super) const fn expert(self) -> bool {
        self.0 & Inherited::EXPERT != 0
    }

    #[inline(always)]
    pub(super) const fn shared(self) -> bool {
        self.0 & Inherited::SHARED != 0
    }
}

/// `layers_at` when no `#[tree(layers)]` field is above.
pub(super) const NO_LAYERS: usize = usize::MAX;

/// The walk's position: one reused path buffer and the flags inherited from above.
///
/// The path is `buffer[..depth]`. The buffer keeps the deepest path seen so far and is
/// overwritten in place: keeping the length outside the `Vec` means that reading the path of a
/// node never reloads, as one wide load, a length that was just stored — a store-forwarding stall
/// that cost several nanoseconds per node.
pub(super) struct Cursor<'a> {
    pub(super) buffer: Vec<Segment<'a>>,
    pub(super) depth: usize,
    pub(super) inherited: Inherited,
    /// The depth of the innermost `#[tree(layers)]` field above, or [`NO_LAYERS`]: a plain word,
    /// stored and loaded whole.
    pub(super) layers_at: usize,
    /// The depth of the own node of a field with roles or `flatten` (`usize::MAX`: none), where
    /// `roles` apply and, when `hide`, a module or container node is not reported.
    pub(super) special_depth: usize,
    pub(super) roles: Roles,
    pub(super) hide: bool,
    /// The shallowest position written since the last node was reported: the path up to it is
    /// the last node's, unchanged. Handed to each node, so that code that follows a walk path by
    /// path (`find_layers`) compares only the segments that may differ.
    pub(super) low: usize,
}

impl Default for Cursor<'_> {
    fn default() -> Self {
        Cursor {
            buffer: Vec::new(),
            depth: 0,
            inherited: Inherited::default(),
            layers_at: NO_LAYERS,
            special_depth: usize::MAX,
            roles: Roles::default(),
            hide: false,
            low: 0,
        }
    }
}

/// The roles a field gives its own node: `#[layer(head)]`, `#[layer(router)]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub(super) head: bool,
    pub(super) router: bool,
}

/// What a field changed on entry.
pub(super) struct FieldScope {
    pub(super) len: usize,
    pub(super) inherited: Inherited,
    pub(super) layers_at: usize,
}

/// What a field with roles or `flatten` changed on entry, besides its [`FieldScope`]: kept apart
/// so that the fields without them, nearly all, pay nothing for it.
pub(super) struct SpecialScope {
    special_depth: usize,
    roles: Roles,
    hide: bool,
}

impl<'a> Cursor<'a> {
    #[inline]
    pub(super) fn path(&self) -> &[Segment<'a>] {
        self.buffer.get(..self.depth).unwrap_or(&[])
    }

    #[inline]
    pub(super) fn push(&mut self, segment: Segment<'a>) {
        self.low = self.low.min(self.depth);
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
    pub(super) fn grow(&mut self) {
        self.buffer.push(Segment::AnyIndex);
    }

    /// The names of a dotted `#[tree(rename)]`, or none for a newtype variant's field.
    #[inline(never)]
    pub(super) fn push_names(&mut self, names: &'static [&'static str]) {
        for name in names {
            self.push(Segment::Name(name));
        }
    }

    #[inline]
    pub(super) fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    #[inline]
    pub(super) fn node<'n>(
        &'n mut self,
        info: &'n NodeInfo,
        module: Option<&'n dyn Any>,
    ) -> Node<'n, 'a> {
        let unchanged = self.low.min(self.depth);
        self.low = self.depth;
        let roles = if self.depth == self.special_depth {
            self.roles
        } else {
            Roles::default()
        };
        Node {
            path: Path::new(self.path()),
            info,
            is_expert: self.inherited.expert() || info.expert,
            is_shared: self.inherited.shared() || info.shared_expert,
            roles,
            layers_at: self.layers_at,
            module,
            unchanged,
        }
    }

    /// Whether the module or container node about to be reported is a flattened field's own,
    /// which is not reported; asking clears it.
    #[inline]
    pub(super) fn hides(&mut self) -> bool {
        if self.depth == self.special_depth && self.hide {
            self.hide = false;
            true
        } else {
            false
        }
    }

    #[inline]
    pub(super) fn enter(&mut self, info: &NodeInfo) -> Scope {
        let scope = Scope {
            inherited: self.inherited,
        };
        self.inherited = self
            .inherited
            .with(Inherited::of(info.expert, info.shared_expert));
        scope
    }

    /// The scope of a node that changes nothing.
    #[inline]
    pub(super) fn unchanged(&self) -> Scope {
        Scope {
            inherited: self.inherited,
        }
    }

    #[inline]
    pub(super) fn exit(&mut self, scope: Scope) {
        self.inherited = scope.inherited;
    }

    #[inline(always)]
    pub(super) fn enter_field(&mut self, field: &Field) -> FieldScope {
        let scope = FieldScope {
            len: self.depth,
            inherited: self.inherited,
            layers_at: self.layers_at,
        };
        match (field.index, field.segments) {
            (Some(index), _) => self.push(Segment::Index(index)),
            (None, [name]) => self.push(Segment::Name(name)),
            (None, names) => self.push_names(names),
        }
        self.inherited = self
            .inherited
            .with(Inherited::of(field.expert, field.shared_expert));
        if field.layers {
            self.layers_at = self.depth;
        }
        scope
    }

    /// After [`enter_field`](Self::enter_field) of a field with roles or `flatten`: the node its
    /// type reports next, at this depth, takes the roles or is not reported.
    #[cold]
    #[inline(never)]
    pub(super) fn enter_special(&mut self, field: &Field) -> SpecialScope {
        let scope = SpecialScope {
            special_depth: self.special_depth,
            roles: self.roles,
            hide: self.hide,
        };
        self.special_depth = self.depth;
        self.hide = field.flatten;
        self.roles = Roles {
            head: field.head,
            router: field.router,
        };
        scope
    }

    #[cold]
    #[inline(never)]
    pub(super) fn exit_special(&mut self, scope: SpecialScope) {
        self.special_depth = scope.special_depth;
        self.roles = scope.roles;
        self.hide = scope.hide;
    }

    #[inline(always)]
    pub(super) fn exit_field(&mut self, scope: FieldScope) {
        self.depth = scope.len;
        self.inherited = scope.inherited;
        self.layers_at = scope.layers_at;
    }
}
