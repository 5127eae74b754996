//! The [`ModuleTree`] trait and the static facts every node carries.
//!
//! `#[derive(ModuleTree)]` implements the trait; the crate implements it for containers
//! (`Vec`, arrays, tuples, maps, `Option`, `Box`, `Arc`, `Rc`), for values that are not modules
//! (numbers, `String`, `PhantomData`, …) and, behind features, for candle's and burn's layers.

use core::any::Any;

use crate::kind::{Kind, Parallel};
use crate::schema::Schema;
use crate::walk::{Walker, WalkerMut};

/// A type whose values form a module tree that can be walked by path.
///
/// Derive it with `#[derive(ModuleTree)]`. A hand-written impl reports its own node and its
/// children through the [`Walker`]; see the crate's `impls` for examples.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a module tree",
    label = "this type does not implement `ModuleTree`",
    note = "a field that holds no layers (a device, a config, a cache, a tracing span) is left out with `#[tree(skip)]`",
    note = "a layer of another crate becomes a leaf with `#[layer(kind = \"...\")]` on the field; a module of this crate derives `ModuleTree`"
)]
pub trait ModuleTree {
    /// The static shape of this type's tree: names, kinds, flags and containers.
    const SCHEMA: Schema;

    /// [`SCHEMA`](Self::SCHEMA) behind one `'static` reference: what the schemas of the types
    /// that hold this one point to, and what the derived walk reads its fields from.
    ///
    /// Leave it to its default in a hand-written impl. The derive makes it a reference to one
    /// `static` per type without generic parameters, so that a schema is built and emitted once
    /// per type however many paths reach it: with `&Self::SCHEMA` everywhere, the compiler emits
    /// a copy of a type's schema for each path to it, which doubles per level when a type holds
    /// two fields of one type.
    const SCHEMA_REF: &'static Schema = &Self::SCHEMA;

    /// Reports this value's nodes, itself first, at the walker's current path.
    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>);

    /// Reports this value's nodes with mutable access to the leaves that offer it.
    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>);

    /// This value as [`Any`], for downcasting a node to its concrete layer type.
    ///
    /// The derive returns `Some` for types without generic parameters; `None` otherwise.
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }

    /// This value as mutable [`Any`]; see [`as_any`](ModuleTree::as_any).
    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        None
    }

    /// The run-time expert flag of a leaf that can hold one, for
    /// [`set_linear_is_expert`](crate::set_linear_is_expert).
    ///
    /// The derive returns the field tagged `#[layer(expert_flag)]` of a `#[layer]` type.
    fn expert_flag_mut(&mut self) -> Option<&mut bool> {
        None
    }
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A module with children: a struct or enum of the user's.
    Module,
    /// A list or map of modules (`Vec`, array, tuple, `BTreeMap`, `HashMap`), like `nn.ModuleList`.
    Container,
    /// A leaf layer of a kind; its fields are not walked.
    Layer(Kind),
}

/// The static facts of a node: what the derive knows from the type and its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// The type's name without generics (`"DecoderLayer"`); for containers, `"Vec"`, `"array"`,
    /// `"tuple"`, `"BTreeMap"`, `"HashMap"`.
    pub type_name: &'static str,
    /// Module, container or layer.
    pub role: Role,
    /// The type is tagged `#[expert]`: it and its subtree are routed experts.
    pub expert: bool,
    /// The type is tagged `#[expert(shared)]`: it and its subtree are shared experts, which every
    /// token passes through (replicated, not expert-parallel).
    pub shared_expert: bool,
    /// `#[layer(head)]`: an output head, left out of `all-linear`.
    pub head: bool,
    /// `#[layer(parallel = "...")]`.
    pub parallel: Option<Parallel>,
    /// `#[layer(parts = [...])]`: the sizes (or ratios) of the projections fused in a packed
    /// layer, along the axis its style splits; empty for a layer that fuses nothing.
    pub parts: &'static [u32],
    /// `#[layer(expert_axis = N)]`: the axis of a `grouped_linear` weight that indexes the experts
    /// (0 unless given: transformers' `[experts, out, in]`).
    pub expert_axis: u8,
}

impl NodeInfo {
    /// A plain module named `type_name`.
    #[must_use]
    pub const fn module(type_name: &'static str) -> Self {
        NodeInfo {
            type_name,
            role: Role::Module,
            expert: false,
            shared_expert: false,
            head: false,
            parallel: None,
            parts: &[],
            expert_axis: 0,
        }
    }

    /// A container named `type_name`.
    #[must_use]
    pub const fn container(type_name: &'static str) -> Self {
        NodeInfo {
            role: Role::Container,
            ..NodeInfo::module(type_name)
        }
    }

    /// A leaf layer of `kind` named `type_name`.
    #[must_use]
    pub const fn layer(type_name: &'static str, kind: Kind) -> Self {
        NodeInfo {
            role: Role::Layer(kind),
            ..NodeInfo::module(type_name)
        }
    }

    /// The same facts, tagged `#[expert]`.
    #[must_use]
    pub const fn expert(self) -> Self {
        NodeInfo {
            expert: true,
            ..self
        }
    }

    /// The same facts, tagged `#[expert(shared)]`.
    #[must_use]
    pub const fn shared_expert(self) -> Self {
        NodeInfo {
            shared_expert: true,
            ..self
        }
    }

    /// The same facts, tagged `#[layer(head)]`.
    #[must_use]
    pub const fn head(self) -> Self {
        NodeInfo { head: true, ..self }
    }

    /// The same facts with a tensor-parallel style.
    #[must_use]
    pub const fn parallel(self, parallel: Parallel) -> Self {
        NodeInfo {
            parallel: Some(parallel),
            ..self
        }
    }

    /// The same facts with the sizes or ratios of a packed layer's fused parts.
    #[must_use]
    pub const fn parts(self, parts: &'static [u32]) -> Self {
        NodeInfo { parts, ..self }
    }

    /// The same facts with the expert axis of a `grouped_linear` weight.
    #[must_use]
    pub const fn expert_axis(self, expert_axis: u8) -> Self {
        NodeInfo {
            expert_axis,
            ..self
        }
    }

    /// The kind of a leaf layer; `None` for modules and containers.
    #[must_use]
    pub const fn kind(&self) -> Option<Kind> {
        match self.role {
            Role::Layer(kind) => Some(kind),
            Role::Module | Role::Container => None,
        }
    }
}

/// The static facts of one field of a derived type: its path segments and its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    /// The segments the field adds to the path: its name, or the parts of a dotted rename.
    /// Empty for the single field of a newtype enum variant, which adds no segment.
    pub segments: &'static [&'static str],
    /// A tuple field's position, which adds an index segment instead of names.
    pub index: Option<usize>,
    /// `#[expert]`: the field's subtree holds routed experts.
    pub expert: bool,
    /// `#[expert(shared)]`: the field's subtree holds shared experts.
    pub shared_expert: bool,
    /// `#[tree(layers)]`: the index under this container is the layer index.
    pub layers: bool,
    /// `#[layer(...)]` on the field: the field is a leaf with these facts, whatever its type.
    pub layer: Option<NodeInfo>,
    /// `#[layer(head)]` without a kind: the field's own node, a leaf of its type, is an output
    /// head (its type's walk, downcasts and delegation unchanged).
    pub head: bool,
    /// `#[layer(router)]`: the field's own node, a leaf of its type, is a router.
    pub router: bool,
    /// `#[tree(flatten)]`: the field adds no segment and its own module or container node is not
    /// reported, so its children sit directly under the field's parent (serde's `flatten`).
    pub flatten: bool,
}

impl Field {
    /// A field with no segment and no flags: the base the derive writes a field's facts over.
    #[doc(hidden)]
    pub const NAMED: Field = Field::named(&[]);

    /// A named field with these path segments.
    #[must_use]
    pub const fn named(segments: &'static [&'static str]) -> Self {
        Field {
            segments,
            index: None,
            expert: false,
            shared_expert: false,
            layers: false,
            layer: None,
            head: false,
            router: false,
            flatten: false,
        }
    }

    /// A positional field of a tuple struct or tuple variant.
    #[must_use]
    pub const fn positional(index: usize) -> Self {
        Field {
            index: Some(index),
            ..Field::named(&[])
        }
    }

    /// The same field, tagged `#[expert]`.
    #[must_use]
    pub const fn expert(self) -> Self {
        Field {
            expert: true,
            ..self
        }
    }

    /// The same field, tagged `#[expert(shared)]`.
    #[must_use]
    pub const fn shared_expert(self) -> Self {
        Field {
            shared_expert: true,
            ..self
        }
    }

    /// The same field, tagged `#[tree(layers)]`.
    #[must_use]
    pub const fn layers(self) -> Self {
        Field {
            layers: true,
            ..self
        }
    }

    /// The same field, its own node an output head (`#[layer(head)]` without a kind).
    #[must_use]
    pub const fn head(self) -> Self {
        Field { head: true, ..self }
    }

    /// The same field, its own node a router (`#[layer(router)]`).
    #[must_use]
    pub const fn router(self) -> Self {
        Field {
            router: true,
            ..self
        }
    }

    /// The same field, flattened into its parent (`#[tree(flatten)]`).
    #[must_use]
    pub const fn flatten(self) -> Self {
        Field {
            flatten: true,
            ..self
        }
    }

    /// Whether the field gives roles to its node or is flattened: the rare fields whose walk
    /// takes the slower path.
    #[must_use]
    #[inline]
    pub const fn is_special(&self) -> bool {
        self.head || self.router || self.flatten
    }

    /// The same field, tagged as a leaf layer with these facts.
    #[must_use]
    pub const fn layer(self, info: NodeInfo) -> Self {
        Field {
            layer: Some(info),
            ..self
        }
    }
}
