//! `#[layer(head)]`: an output head, left out of `find_all_linear_modules`; the keys of two
//! `#[layer]` attributes on one field add up.

use moduletree::{ModuleTree, find_all_linear_modules, named_modules};

#[derive(ModuleTree)]
#[layer(kind = "linear", head)]
struct ScoreHead;

#[derive(ModuleTree)]
struct Model {
    #[layer(kind = "linear")]
    proj: (),
    #[layer(kind = "linear")]
    #[layer(head)]
    lm_head: (),
    score: ScoreHead,
}

fn main() {
    let model = Model {
        proj: (),
        lm_head: (),
        score: ScoreHead,
    };
    let heads: Vec<_> = named_modules(&model)
        .into_iter()
        .map(|node| (node.path().to_owned(), node.is_head()))
        .collect();
    assert_eq!(
        heads,
        [
            (String::new(), false),
            ("proj".to_owned(), false),
            ("lm_head".to_owned(), true),
            ("score".to_owned(), true),
        ]
    );
    assert_eq!(find_all_linear_modules(&model), ["proj"]);
}
