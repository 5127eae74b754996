//! The registry of model types linked into a program.
//!
//! Every non-generic type that derives [`ModuleTree`](crate::ModuleTree) registers its static
//! [`Schema`] through `inventory` (opt out with `#[tree(register = false)]`), so a program can list
//! the model types it links and print their trees without building a model. Registration runs no
//! code at start-up: `inventory` collects the entries lazily, on the first read.

use crate::schema::Schema;

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
    types
        .sort_by(|left, right| (left.module_path, left.name).cmp(&(right.module_path, right.name)));
    types
}

/// The registered types whose name, or full name with its module path, equals `name`.
#[must_use]
pub fn find(name: &str) -> Vec<&'static Registration> {
    types()
        .into_iter()
        .filter(|registration| registration.name == name || registration.full_name() == name)
        .collect()
}
