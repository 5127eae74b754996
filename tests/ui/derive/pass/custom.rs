//! `#[layer(custom = "...")]`: a kind of the user's own, on a type and on a field.

use moduletree::{Kind, ModuleTree, named_modules};

#[derive(ModuleTree)]
#[layer(custom = "rotary")]
struct Rotary {
    inv_freq: Vec<f32>,
}

#[derive(ModuleTree)]
struct Attention {
    rotary_emb: Rotary,
    #[layer(custom = "alibi")]
    alibi: Vec<f32>,
}

fn main() {
    let attention = Attention {
        rotary_emb: Rotary { inv_freq: vec![] },
        alibi: vec![],
    };
    let kinds: Vec<_> = named_modules(&attention)
        .into_iter()
        .map(|node| (node.path().to_owned(), node.type_name(), node.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            (String::new(), "Attention", None),
            (
                "rotary_emb".to_owned(),
                "Rotary",
                Some(Kind::Custom("rotary"))
            ),
            ("alibi".to_owned(), "Vec", Some(Kind::Custom("alibi"))),
        ]
    );
    assert_eq!(Kind::Custom("rotary").name(), "rotary");
}
