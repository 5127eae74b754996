//! `#[layer(parallel = "column" | "row")]`, on a type and on a field.

use moduletree::{ModuleTree, Parallel, named_modules};

#[derive(ModuleTree)]
#[layer(kind = "linear", parallel = "column")]
struct ColumnParallelLinear;

#[derive(ModuleTree)]
struct Mlp {
    up_proj: ColumnParallelLinear,
    #[layer(kind = "linear", parallel = "row")]
    down_proj: (),
    #[layer(kind = "linear")]
    replicated: (),
}

fn main() {
    let mlp = Mlp {
        up_proj: ColumnParallelLinear,
        down_proj: (),
        replicated: (),
    };
    let parallel: Vec<_> = named_modules(&mlp)
        .into_iter()
        .map(|node| (node.path().to_owned(), node.parallel()))
        .collect();
    assert_eq!(
        parallel,
        [
            (String::new(), None),
            ("up_proj".to_owned(), Some(Parallel::Column)),
            ("down_proj".to_owned(), Some(Parallel::Row)),
            ("replicated".to_owned(), None),
        ]
    );
}
