//! `#[tree(rename = "a.b")]`: one segment per part, as in HF checkpoints.

use moduletree::{ModuleTree, Segment, walk};

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
struct Gpt2 {
    #[tree(rename = "transformer.h")]
    blocks: Vec<Block>,
    #[tree(rename = "lm_head")]
    head: Linear,
}

#[derive(ModuleTree)]
struct Block {
    #[tree(rename = "attn.c_attn")]
    qkv: Linear,
}

fn main() {
    let model = Gpt2 {
        blocks: vec![Block { qkv: Linear }],
        head: Linear,
    };
    let mut paths = Vec::new();
    walk(&model, |node| {
        paths.push((node.path().to_string(), node.path().segments().to_vec()));
    });
    assert_eq!(
        paths,
        [
            (String::new(), vec![]),
            (
                "transformer.h".to_owned(),
                vec![Segment::Name("transformer"), Segment::Name("h")],
            ),
            (
                "transformer.h.0".to_owned(),
                vec![
                    Segment::Name("transformer"),
                    Segment::Name("h"),
                    Segment::Index(0)
                ],
            ),
            (
                "transformer.h.0.attn.c_attn".to_owned(),
                vec![
                    Segment::Name("transformer"),
                    Segment::Name("h"),
                    Segment::Index(0),
                    Segment::Name("attn"),
                    Segment::Name("c_attn"),
                ],
            ),
            ("lm_head".to_owned(), vec![Segment::Name("lm_head")]),
        ]
    );
}
