//! Types with nothing to walk: unit and empty structs, an enum without variants, a module whose
//! every field is skipped.

use moduletree::{ModuleTree, named_modules};

#[derive(ModuleTree)]
struct Unit;

#[derive(ModuleTree)]
struct Empty {}

#[derive(ModuleTree)]
struct EmptyTuple();

#[derive(ModuleTree)]
enum Never {}

#[derive(ModuleTree)]
struct AllSkipped {
    #[tree(skip)]
    cache: Vec<f32>,
    #[tree(skip)]
    never: Option<Never>,
}

fn main() {
    let paths = |nodes: Vec<moduletree::NamedModule>| -> Vec<(String, &str)> {
        nodes
            .into_iter()
            .map(|node| (node.path().to_owned(), node.type_name()))
            .collect()
    };
    assert_eq!(paths(named_modules(&Unit)), [(String::new(), "Unit")]);
    assert_eq!(paths(named_modules(&Empty {})), [(String::new(), "Empty")]);
    assert_eq!(
        paths(named_modules(&EmptyTuple())),
        [(String::new(), "EmptyTuple")]
    );
    let skipped = AllSkipped {
        cache: vec![1.0],
        never: None,
    };
    assert_eq!(
        paths(named_modules(&skipped)),
        [(String::new(), "AllSkipped")]
    );
    assert!(named_modules(&None::<Never>).is_empty());
}
