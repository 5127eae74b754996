//! Raw identifiers lose their `r#` in paths and type names.

#![allow(
    non_camel_case_types,
    reason = "the types are named with raw keywords on purpose"
)]

use moduletree::{ModuleTree, named_modules};

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct r#match;

#[derive(ModuleTree)]
enum r#enum {
    r#struct { r#fn: r#match },
}

#[derive(ModuleTree)]
struct Block {
    r#type: r#match,
    #[layer(kind = "norm")]
    r#in: (),
    r#enum: r#enum,
}

fn main() {
    let block = Block {
        r#type: r#match,
        r#in: (),
        r#enum: r#enum::r#struct { r#fn: r#match },
    };
    let nodes: Vec<_> = named_modules(&block)
        .into_iter()
        .map(|node| (node.path().to_owned(), node.type_name()))
        .collect();
    assert_eq!(
        nodes,
        [
            (String::new(), "Block"),
            ("type".to_owned(), "match"),
            ("in".to_owned(), "()"),
            ("enum".to_owned(), "enum"),
            ("enum.fn".to_owned(), "match"),
        ]
    );
}
