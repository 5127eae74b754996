//! `#[tree(crate = "path")]`, the string form serde's `crate` attribute uses.

mod framework {
    pub use moduletree;
}

use framework::moduletree::ModuleTree;

#[derive(ModuleTree)]
#[tree(crate = "framework::moduletree")]
#[layer(kind = "norm")]
struct Norm;

fn main() {
    let paths: Vec<_> = framework::moduletree::named_modules(&Norm)
        .into_iter()
        .map(|node| node.path().to_owned())
        .collect();
    assert_eq!(paths, [""]);
}
