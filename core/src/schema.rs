//! The static schema: the shape of a type's module tree, known at compile time.
//!
//! Every [`ModuleTree`](crate::ModuleTree) type has a `const SCHEMA`, built by the derive from
//! the field types' own schemas. It describes every path the type can produce — with one `<>`
//! segment for each container — without building a value. Compile-checked targets, the registry
//! and the display read it. What an instance holds can differ from its schema: an empty `Vec`, a
//! `None`, or an enum variant not taken has no nodes in the instance, but its paths are in the
//! schema.

use crate::path::bytes_equal;
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

/// A field tagged `#[layer]`: the field with its leaf's facts taken from `schema` (so the
/// derive writes them once), and that schema.
#[doc(hidden)]
#[must_use]
pub const fn layer_field(field: Field, schema: &'static Schema) -> FieldSchema {
    FieldSchema {
        field: Field {
            layer: schema.info,
            ..field
        },
        schema,
    }
}

/// The fields of a struct's schema; none for other shapes. The derived walk reads each field's
/// facts from here, where the schema wrote them.
#[doc(hidden)]
#[must_use]
#[inline(always)]
pub const fn fields(schema: &'static Schema) -> &'static [FieldSchema] {
    match schema.shape {
        Shape::Fields(fields) => fields,
        _ => &[],
    }
}

/// The variants of an enum's schema; none for other shapes.
#[doc(hidden)]
#[must_use]
#[inline(always)]
pub const fn variants(schema: &'static Schema) -> &'static [VariantSchema] {
    match schema.shape {
        Shape::Variants(variants) => variants,
        _ => &[],
    }
}

/// The facts of a schema's own node; a nameless module's for a schema without one, which the
/// derive never asks for.
#[doc(hidden)]
#[must_use]
#[inline(always)]
pub const fn info(schema: &'static Schema) -> &'static NodeInfo {
    const NAMELESS: &NodeInfo = &NodeInfo::module("");
    match &schema.info {
        Some(info) => info,
        None => NAMELESS,
    }
}

/// How many nodes named `name` `fields` put at their parent's level, flattened fields counted
/// through (an enum's variants by the largest count, as one variant is present at a time).
const fn count_name(fields: &[FieldSchema], name: &str) -> usize {
    let mut count = 0;
    let mut at = 0;
    while at < fields.len() {
        let field = &fields[at];
        if field.field.flatten {
            count += count_in(field.schema, name);
        } else if field.field.index.is_none()
            && !field.field.segments.is_empty()
            && bytes_equal(field.field.segments[0].as_bytes(), name.as_bytes())
        {
            count += 1;
        }
        at += 1;
    }
    count
}

const fn count_in(schema: &Schema, name: &str) -> usize {
    match schema.shape {
        Shape::Fields(fields) => count_name(fields, name),
        Shape::Transparent(inner) => count_in(inner, name),
        Shape::Variants(variants) => {
            let mut most = 0;
            let mut at = 0;
            while at < variants.len() {
                let count = count_name(variants[at].fields, name);
                if count > most {
                    most = count;
                }
                at += 1;
            }
            most
        }
        Shape::Leaf | Shape::Sequence { .. } | Shape::Tuple(_) | Shape::Map(_) => 0,
    }
}

/// The first name that two of `fields` (`all`'s, flattened ones counted through) both put at
/// the parent's level.
const fn collision(all: &[FieldSchema], fields: &[FieldSchema]) -> Option<&'static str> {
    let mut at = 0;
    while at < fields.len() {
        let field = &fields[at];
        let found = if field.field.flatten {
            collision_in(all, field.schema)
        } else if field.field.index.is_none() && !field.field.segments.is_empty() {
            let name = field.field.segments[0];
            if count_name(all, name) > 1 {
                Some(name)
            } else {
                None
            }
        } else {
            None
        };
        if found.is_some() {
            return found;
        }
        at += 1;
    }
    None
}

const fn collision_in(all: &[FieldSchema], schema: &Schema) -> Option<&'static str> {
    match schema.shape {
        Shape::Fields(fields) => collision(all, fields),
        Shape::Transparent(inner) => collision_in(all, inner),
        Shape::Variants(variants) => {
            let mut at = 0;
            while at < variants.len() {
                let found = collision(all, variants[at].fields);
                if found.is_some() {
                    return found;
                }
                at += 1;
            }
            None
        }
        Shape::Leaf | Shape::Sequence { .. } | Shape::Tuple(_) | Shape::Map(_) => None,
    }
}

/// Whether `schema` is a leaf layer, through the wrappers that add no node (`Option`, `Box`, a
/// derived wrapper whose one field is flattened).
const fn is_layer(schema: &Schema) -> bool {
    if let Some(info) = &schema.info {
        return info.kind().is_some();
    }
    match schema.shape {
        Shape::Transparent(inner) => is_layer(inner),
        Shape::Fields([only]) => is_layer(only.schema),
        _ => false,
    }
}

/// Checks, in a constant, the fields of a derived type that flattens some of them: no flattened
/// field is a layer (a layer is a node of its own), and no two fields put a node of one name at
/// the type's level.
///
/// # Panics
///
/// At compile time, naming the rule broken.
#[doc(hidden)]
pub const fn check_flattened(schema: &Schema) {
    let fields = match schema.shape {
        Shape::Fields(fields) => fields,
        _ => return,
    };
    let mut at = 0;
    while at < fields.len() {
        if fields[at].field.flatten && is_layer(fields[at].schema) {
            panic!(
                "`#[tree(flatten)]` on a field whose type is a layer: a layer is a node of its own; flatten the module that holds it, or make the field's type a wrapper whose one field is flattened"
            );
        }
        at += 1;
    }
    // A constant's panic cannot format the name; the error points at the type.
    if collision(fields, fields).is_some() {
        panic!(
            "two fields of this type put nodes of one name at one path once flattened: rename one with `#[tree(rename = \"...\")]`"
        );
    }
}

/// Checks, in a constant, that a field given `#[layer(head)]` or `#[layer(router)]` holds a layer.
///
/// # Panics
///
/// At compile time, when its type is a module or a container.
#[doc(hidden)]
pub const fn check_role(schema: &Schema) {
    if !is_layer(schema) {
        panic!(
            "`#[layer(head)]` and `#[layer(router)]` without a kind give a role to the layer a field holds, and this field's type is a module or a container: put the role on the layer's own field, or give the field a kind"
        );
    }
}

/// Checks, in a constant, the fields of a derived type given a dotted `#[tree(rename)]`: the
/// path such a field takes (`self_attn.rotary_emb`) is not one that another field's type
/// already puts a node at (a field `self_attn` whose type has a `rotary_emb`), which would give
/// two nodes one path.
///
/// # Panics
///
/// At compile time, when two nodes would share a path.
#[doc(hidden)]
pub const fn check_dotted(schema: &Schema) {
    let fields = match schema.shape {
        Shape::Fields(fields) => fields,
        _ => return,
    };
    let mut at = 0;
    while at < fields.len() {
        let segments = fields[at].field.segments;
        if segments.len() > 1 {
            let mut other = 0;
            while other < fields.len() {
                let field = &fields[other].field;
                // Another field whose path is a proper prefix of this one's (`a`, or a dotted
                // `a.b` under `a.b.q_proj`), and whose type has the rest.
                if other != at
                    && !field.flatten
                    && field.index.is_none()
                    && field.segments.len() < segments.len()
                    && starts_with(segments, field.segments)
                    && has_path(
                        fields[other].schema,
                        segments.split_at(field.segments.len()).1,
                    )
                {
                    panic!(
                        "a field's dotted `#[tree(rename)]` gives it a path that another field's type already has: two nodes would share it; rename one"
                    );
                }
                other += 1;
            }
        }
        at += 1;
    }
}

/// Whether `schema` has a node at the path `segments` below it (named segments only).
const fn has_path(schema: &Schema, segments: &[&str]) -> bool {
    if segments.is_empty() {
        return true;
    }
    match schema.shape {
        Shape::Fields(fields) => fields_have_path(fields, segments),
        Shape::Transparent(inner) => has_path(inner, segments),
        Shape::Variants(variants) => {
            let mut at = 0;
            while at < variants.len() {
                if fields_have_path(variants[at].fields, segments) {
                    return true;
                }
                at += 1;
            }
            false
        }
        Shape::Leaf | Shape::Sequence { .. } | Shape::Tuple(_) | Shape::Map(_) => false,
    }
}

const fn fields_have_path(fields: &[FieldSchema], segments: &[&str]) -> bool {
    let mut at = 0;
    while at < fields.len() {
        let field = &fields[at];
        if field.field.flatten {
            if has_path(field.schema, segments) {
                return true;
            }
        } else if field.field.index.is_none() && starts_with(segments, field.field.segments) {
            let rest = segments.split_at(field.field.segments.len()).1;
            if has_path(field.schema, rest) {
                return true;
            }
        }
        at += 1;
    }
    false
}

/// Whether `path` begins with the non-empty `prefix`, segment by segment.
const fn starts_with(path: &[&str], prefix: &[&str]) -> bool {
    if prefix.is_empty() || prefix.len() > path.len() {
        return false;
    }
    let mut at = 0;
    while at < prefix.len() {
        if !bytes_equal(path[at].as_bytes(), prefix[at].as_bytes()) {
            return false;
        }
        at += 1;
    }
    true
}

/// Checks, in a constant, that a field given `#[tree(layers)]` holds a container (a `Vec`, an
/// array, a tuple or a map, through `Option`, `Box` and the like, or an enum that may hold one),
/// whose index is the layer index: on a module field it would give no node a layer index.
///
/// # Panics
///
/// At compile time, when the field's type is no container.
#[doc(hidden)]
pub const fn check_layers(schema: &Schema) {
    let mut schema = schema;
    while let Shape::Transparent(inner) = schema.shape {
        schema = inner;
    }
    // An enum may hold the list in a variant (`Dense(Vec<Block>)`): its walk reports the
    // variant's container at the field's path.
    if !matches!(
        schema.shape,
        Shape::Sequence { .. } | Shape::Tuple(_) | Shape::Map(_) | Shape::Variants(_)
    ) {
        panic!(
            "`#[tree(layers)]` marks the container whose index is the layer index, and this field's type is no container (a `Vec`, an array, a tuple or a map): put it on the field that holds the layers"
        );
    }
}
