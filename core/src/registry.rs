//! The registry of model types linked into a program.
//!
//! Every non-generic type that derives [`ModuleTree`](crate::ModuleTree) registers its static
//! [`Schema`] through `inventory` (opt out with `#[tree(register = false)]`), so a program can list
//! the model types it links and print their trees without building a model. Registration costs
//! next to nothing: each entry is a `static` holding three references, linked into `inventory`'s
//! list by one pointer push in a static constructor, with no allocation; schemas are constants,
//! and nothing is sorted or walked until the registry is read. Types from every
//! crate the program links are listed, as long as the linker keeps that crate: a program that
//! uses any item of the crate (a function, a type) sees all its registrations, but one that only
//! reads the registry and names nothing from the crate sees none of them, because the linker drops
//! a library nothing refers to. Generic types (`ForCausalLm<L>`) have no single schema and are not
//! registered; register a concrete model by wrapping it in a non-generic type.
//!
//! # Schema and instance
//!
//! A registered schema answers without a model: [`named_modules`](crate::named_modules),
//! [`find_all_linear_modules`](crate::find_all_linear_modules) and the display all take
//! `registration.schema`, with `<>` for every element of a container and `*` for every map key.
//! These answers match those for an instance whose containers are all non-empty, with three
//! exceptions where the schema names more than the instance holds: an empty `Vec` (or map) has no
//! elements in the instance, a `None` has no nodes, and an enum's variants not taken have no
//! nodes, while the schema lists every variant's nodes at the same path.

use std::collections::HashSet;

use crate::schema::{Schema, Shape};
use crate::tree::Role;

/// One registered model type.
#[derive(Debug)]
pub struct Registration {
    /// The type's name, as written in its definition.
    pub name: &'static str,
    /// The module that defines it (`module_path!()` there).
    pub module_path: &'static str,
    /// The type's static schema.
    pub schema: &'static Schema,
}

impl Registration {
    /// The path of the type: its module path and name joined by `::`.
    #[must_use]
    pub fn full_name(&self) -> String {
        format!("{}::{}", self.module_path, self.name)
    }
}

inventory::collect!(Registration);

/// Every registered type, sorted by full name so that the order is the same on every run.
#[must_use]
pub fn types() -> Vec<&'static Registration> {
    let mut types: Vec<&'static Registration> = inventory::iter::<Registration>().collect();
    // By the joined text, not by (module path, name): `a::x` sorts after `a::b::c`.
    types.sort_by(|left, right| full_name_bytes(left).cmp(full_name_bytes(right)));
    types
}

/// The bytes of [`Registration::full_name`], without building it.
fn full_name_bytes(registration: &Registration) -> impl Iterator<Item = u8> + '_ {
    registration
        .module_path
        .bytes()
        .chain(*b"::")
        .chain(registration.name.bytes())
}

/// The registered types whose name, or full name with its module path, equals `name`.
#[must_use]
pub fn find(name: &str) -> Vec<&'static Registration> {
    types()
        .into_iter()
        .filter(|registration| {
            registration.name == name || full_name_bytes(registration).eq(name.bytes())
        })
        .collect()
}

/// The registered module types that no other registered type contains: the models themselves,
/// rather than their blocks and layers. Containment is judged by type name.
#[must_use]
pub fn top_level() -> Vec<&'static Registration> {
    let types = types();
    let mut contained: HashSet<&'static str> = HashSet::new();
    for registration in &types {
        collect_inner_types(registration.schema, &mut contained);
    }
    types
        .into_iter()
        .filter(|registration| {
            registration
                .schema
                .info
                .is_some_and(|info| info.role == Role::Module)
                && !contained.contains(registration.name)
        })
        .collect()
}

/// Adds the type names of every schema below `schema` (not its own).
fn collect_inner_types(schema: &Schema, names: &mut HashSet<&'static str>) {
    let mut visit = |inner: &'static Schema| {
        if let Some(info) = inner.info {
            names.insert(info.type_name);
        }
        collect_inner_types(inner, names);
    };
    match schema.shape {
        Shape::Leaf => {}
        Shape::Fields(fields) => fields.iter().for_each(|field| visit(field.schema)),
        Shape::Variants(variants) => variants
            .iter()
            .flat_map(|variant| variant.fields)
            .for_each(|field| visit(field.schema)),
        Shape::Sequence { element, .. } => visit(element),
        Shape::Tuple(elements) => elements.iter().for_each(|element| visit(element)),
        Shape::Map(value) | Shape::Transparent(value) => visit(value),
    }
}

/// Why [`find_one`] found no single type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    /// No registered type has the name.
    #[error("no registered model type is named `{name}`{}", suggest(similar))]
    NotFound {
        /// The name looked up.
        name: String,
        /// Registered names that differ only in case or contain it, for a hint.
        similar: Vec<String>,
    },
    /// Several registered types have the name; their full names tell them apart.
    #[error("`{name}` is ambiguous: it names {}; use the full name", candidates.join(", "))]
    Ambiguous {
        /// The name looked up.
        name: String,
        /// The full names of the types it matches.
        candidates: Vec<String>,
    },
}

fn suggest(similar: &[String]) -> String {
    if similar.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", similar.join(", "))
    }
}

/// The one registered type whose name, or full name, equals `name`.
///
/// # Errors
///
/// [`LookupError::NotFound`] with similar names when none matches, and
/// [`LookupError::Ambiguous`] with the full names when several do.
pub fn find_one(name: &str) -> Result<&'static Registration, LookupError> {
    let found = find(name);
    match found.as_slice() {
        [one] => Ok(one),
        [] => {
            let lower = name.to_lowercase();
            let similar = types()
                .into_iter()
                .filter(|registration| {
                    let candidate = registration.name.to_lowercase();
                    !lower.is_empty() && (candidate.contains(&lower) || lower.contains(&candidate))
                })
                .map(Registration::full_name)
                .collect();
            Err(LookupError::NotFound {
                name: name.to_owned(),
                similar,
            })
        }
        several => Err(LookupError::Ambiguous {
            name: name.to_owned(),
            candidates: several
                .iter()
                .map(|registration| registration.full_name())
                .collect(),
        }),
    }
}
