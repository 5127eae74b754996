//! The static schema: the shape of a type's module tree, known at compile time.
//!
//! Every [`ModuleTree`](crate::ModuleTree) type has a `const SCHEMA`, built by the derive from
//! the field types' own schemas. It describes every path the type can produce — with one `<>`
//! segment for each container — without building a value. Compile-checked targets, the registry
//! and the display read it. What an instance holds can differ from its schema: an empty `Vec`, a
//! `None`, or an enum variant not taken has no nodes in the instance, but its paths are in the
//! schema.

use crate::tree::{Field, NodeInfo};

/// The static shape of one type's tree.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    /// The facts of the type's own node; `None` when the type is not a module (numbers, tensors).
    pub info: Option<NodeInfo>,
    /// What lies below the node.
    pub shape: Shape,
}

/// What lies below a node in a [`Schema`].
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// Nothing: a leaf layer, or a value that is not a module.
    Leaf,
    /// The fields of a struct, each with its own schema.
    Fields(&'static [FieldSchema]),
    /// An enum: one of the variants is present at run time.
    Variants(&'static [VariantSchema]),
    /// `Vec<T>` or `[T; N]`: any number of elements (or exactly `N`) under index segments.
    Sequence {
        /// The elements' schema.
        element: &'static Schema,
        /// The length of an array; `None` for a `Vec`.
        len: Option<usize>,
    },
    /// A tuple: one element of each schema, under index segments `0`, `1`, ….
    Tuple(&'static [&'static Schema]),
    /// `BTreeMap<String, T>` or `HashMap<String, T>`: values under key segments.
    Map(&'static Schema),
    /// `Option<T>`, `Box<T>`, `Arc<T>`, `Rc<T>`: the inner type at the same path.
    Transparent(&'static Schema),
}

/// One field of a struct or variant in a [`Schema`].
#[derive(Clone, Copy, Debug)]
pub struct FieldSchema {
    /// The field's segments and flags, shared with the walk.
    pub field: Field,
    /// The field type's schema, or a leaf's for a field tagged `#[layer]`.
    pub schema: &'static Schema,
}

/// One variant of an enum in a [`Schema`]. The variant adds no path segment.
#[derive(Clone, Copy, Debug)]
pub struct VariantSchema {
    /// The variant's name.
    pub name: &'static str,
    /// A newtype variant: its one field sits at the enum's own path and the enum adds no node of
    /// its own. Otherwise the enum is a module node whose children are the variant's fields.
    pub transparent: bool,
    /// The variant's fields that are walked; a transparent variant's one field has no segments.
    pub fields: &'static [FieldSchema],
}

impl Schema {
    /// The schema of a value that is not a module: it adds no node.
    pub const NONE: Schema = Schema {
        info: None,
        shape: Shape::Leaf,
    };

    /// The schema of a leaf layer.
    #[must_use]
    pub const fn layer(info: NodeInfo) -> Schema {
        Schema {
            info: Some(info),
            shape: Shape::Leaf,
        }
    }

    /// The schema of a node with this shape below it.
    #[must_use]
    pub const fn node(info: NodeInfo, shape: Shape) -> Schema {
        Schema {
            info: Some(info),
            shape,
        }
    }

    /// The schema of a wrapper that adds nothing: `Option`, `Box`, `Arc`, `Rc`.
    #[must_use]
    pub const fn transparent(inner: &'static Schema) -> Schema {
        Schema {
            info: None,
            shape: Shape::Transparent(inner),
        }
    }
}
