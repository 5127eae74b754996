//! `#[tree(register = false)]` keeps a type out of the registry; types register by default.

use moduletree::{ModuleTree, registry};

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Registered;

#[derive(ModuleTree)]
#[tree(register = false)]
#[layer(kind = "linear")]
struct Unregistered;

#[derive(ModuleTree)]
#[tree(register = true)]
struct Explicit {
    proj: Registered,
    other: Unregistered,
}

fn main() {
    assert_eq!(registry::find("Registered").len(), 1);
    assert_eq!(registry::find("Explicit").len(), 1);
    assert!(registry::find("Unregistered").is_empty());
    assert_eq!(
        registry::find("Registered")[0].full_name(),
        format!("{}::Registered", module_path!())
    );
}
