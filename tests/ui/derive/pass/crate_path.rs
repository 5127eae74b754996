//! `#[tree(crate = path)]`: the derive reached through a crate that re-exports `moduletree`.

mod framework {
    pub use moduletree;
}

use framework::moduletree::ModuleTree;

#[derive(ModuleTree)]
#[tree(crate = framework::moduletree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
#[tree(crate = crate::framework::moduletree)]
struct Block<T> {
    #[expert]
    experts: Vec<T>,
}

fn main() {
    let block = Block {
        experts: vec![Linear],
    };
    let paths: Vec<_> = framework::moduletree::named_modules(&block)
        .into_iter()
        .map(|node| node.path().to_owned())
        .collect();
    assert_eq!(paths, ["", "experts", "experts.0"]);
    assert_eq!(framework::moduletree::registry::find("Linear").len(), 1);
}
