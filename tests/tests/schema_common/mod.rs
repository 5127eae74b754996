//! The full static schema of types, written out fact by fact so that a snapshot pins it: every
//! path with its node's facts (`NodeInfo`: role and kind, type name, expert, shared expert, head,
//! parallel style, parts, expert axis) and each field's own facts (segments or index, expert,
//! shared expert, `layers`, head, router, flatten, the layer it makes). The schema is read
//! through its public fields, not through a walk, so that a change in the walk cannot hide a
//! change in the schema.
#![allow(dead_code, reason = "each test file uses a part")]

use std::fmt::Write as _;

use moduletree::registry;
use moduletree::schema::{FieldSchema, Schema, Shape};

/// Every registered type whose module path starts with one of `crates`, sorted by full name,
/// then `extra` (generic types, which are not registered), each with its schema written out.
pub fn schemas(crates: &[&str], extra: &[(&str, &Schema)]) -> String {
    let mut out = String::new();
    for registration in registry::types() {
        let in_crate = crates.iter().any(|name| {
            registration.module_path == *name
                || registration
                    .module_path
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with("::"))
        });
        if in_crate {
            write_type(&mut out, &registration.full_name(), registration.schema);
        }
    }
    for (name, schema) in extra {
        write_type(&mut out, name, schema);
    }
    out
}

/// `schema` written out, one line per schema and per field, under a `== name` heading.
pub fn write_type(out: &mut String, name: &str, schema: &Schema) {
    writeln!(out, "== {name}").unwrap();
    write_schema(out, "", 0, schema);
    out.push('\n');
}

fn write_schema(out: &mut String, path: &str, depth: usize, schema: &Schema) {
    let indent = "  ".repeat(depth);
    let shape = match schema.shape {
        Shape::Leaf => "leaf".to_owned(),
        Shape::Fields(fields) => format!("fields({})", fields.len()),
        Shape::Variants(variants) => format!("variants({})", variants.len()),
        Shape::Sequence { len, .. } => format!("sequence(len={len:?})"),
        Shape::Tuple(elements) => format!("tuple({})", elements.len()),
        Shape::Map(_) => "map".to_owned(),
        Shape::Transparent(_) => "transparent".to_owned(),
    };
    let shown = if path.is_empty() { "<root>" } else { path };
    match &schema.info {
        Some(info) => writeln!(out, "{indent}{shown} {shape} {info:?}").unwrap(),
        None => writeln!(out, "{indent}{shown} {shape} (no node)").unwrap(),
    }
    match schema.shape {
        Shape::Leaf => {}
        Shape::Fields(fields) => write_fields(out, path, depth + 1, fields),
        Shape::Variants(variants) => {
            for variant in variants {
                writeln!(
                    out,
                    "{indent}  variant {} transparent={}",
                    variant.name, variant.transparent
                )
                .unwrap();
                write_fields(out, path, depth + 2, variant.fields);
            }
        }
        Shape::Sequence { element, .. } => {
            write_schema(out, &join(path, "<>"), depth + 1, element);
        }
        Shape::Tuple(elements) => {
            for (index, element) in elements.iter().enumerate() {
                write_schema(out, &join(path, &index.to_string()), depth + 1, element);
            }
        }
        Shape::Map(value) => write_schema(out, &join(path, "*"), depth + 1, value),
        Shape::Transparent(inner) => write_schema(out, path, depth + 1, inner),
    }
}

fn write_fields(out: &mut String, path: &str, depth: usize, fields: &[FieldSchema]) {
    let indent = "  ".repeat(depth);
    for field in fields {
        let own = match field.field.index {
            Some(index) => index.to_string(),
            None => field.field.segments.join("."),
        };
        let path = if own.is_empty() {
            path.to_owned()
        } else {
            join(path, &own)
        };
        writeln!(out, "{indent}field {:?}", field.field).unwrap();
        write_schema(out, &path, depth + 1, field.schema);
    }
}

fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_owned()
    } else {
        format!("{path}.{segment}")
    }
}
