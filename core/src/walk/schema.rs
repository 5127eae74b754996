//! Walking a type's static [`Schema`]: every node a value of the type can have.

use crate::path::Segment;
use crate::schema::{FieldSchema, Schema, Shape};
use crate::walk::Node;
use crate::walk::cursor::Cursor;

/// Walks a static schema: every node a value of the type can have, with `<>` for every element
/// of a `Vec`, array or map key (`*`). An enum reports the nodes of all its variants.
pub(super) fn walk_schema<'a>(
    schema: &'a Schema,
    cursor: &mut Cursor<'a>,
    visit: &mut dyn FnMut(&Node<'_, 'a>),
) {
    let scope = match &schema.info {
        Some(info) => {
            let transparent_enum = matches!(schema.shape, Shape::Variants(variants)
                if variants.iter().all(|variant| variant.transparent));
            // A flattened field's own module or container node is not reported.
            let hidden = !transparent_enum && info.kind().is_none() && cursor.hides();
            if !transparent_enum && !hidden {
                visit(&cursor.node(info, None));
            }
            cursor.enter(info)
        }
        None => cursor.unchanged(),
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
        if field.field.is_special() {
            let special = cursor.enter_special(&field.field);
            walk_schema(field.schema, cursor, visit);
            cursor.exit_special(special);
        } else {
            walk_schema(field.schema, cursor, visit);
        }
        cursor.exit_field(scope);
    }
}
