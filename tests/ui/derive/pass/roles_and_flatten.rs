//! `#[layer(head)]` and `#[layer(router)]` without a kind give roles to the node a field's type
//! reports (its walk and downcasts unchanged); `#[tree(flatten)]` puts a field's children under
//! its parent; tuples of values that are not modules make no node.

use moduletree::{Kind, ModuleTree, walk};

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear {
    weight: Vec<f32>,
}

/// A wrapper as tracing code writes it: its own segment, which `flatten` removes.
#[derive(ModuleTree)]
struct Traced<T> {
    #[tree(flatten)]
    inner: T,
    #[tree(skip)]
    span: &'static str,
}

#[derive(ModuleTree)]
enum QProj {
    Plain(#[tree(rename = "q_proj")] Linear),
    Lora {
        #[tree(rename = "q_a_proj")]
        a: Linear,
        #[tree(rename = "q_b_proj")]
        b: Linear,
    },
}

#[derive(ModuleTree)]
struct Attention {
    #[tree(flatten)]
    q: QProj,
    o_proj: Traced<Linear>,
    kv_cache: Option<(u32, String)>,
}

#[derive(ModuleTree)]
struct Model {
    #[layer(router)]
    gate: Traced<Linear>,
    self_attn: Attention,
    #[layer(head)]
    lm_head: Linear,
}

fn main() {
    let linear = || Linear { weight: Vec::new() };
    let model = Model {
        gate: Traced {
            inner: linear(),
            span: "gate",
        },
        self_attn: Attention {
            q: QProj::Lora {
                a: linear(),
                b: linear(),
            },
            o_proj: Traced {
                inner: linear(),
                span: "o",
            },
            kv_cache: Some((0, String::new())),
        },
        lm_head: linear(),
    };
    let mut nodes = Vec::new();
    walk(&model, |node| {
        nodes.push((
            node.path().to_string(),
            node.kind(),
            node.is_head(),
            node.downcast_ref::<Linear>().is_some(),
        ))
    });
    assert_eq!(
        nodes,
        [
            (String::new(), None, false, false),
            ("gate".to_owned(), Some(Kind::Router), false, true),
            ("self_attn".to_owned(), None, false, false),
            ("self_attn.q_a_proj".to_owned(), Some(Kind::Linear), false, true),
            ("self_attn.q_b_proj".to_owned(), Some(Kind::Linear), false, true),
            ("self_attn.o_proj".to_owned(), Some(Kind::Linear), false, true),
            ("lm_head".to_owned(), Some(Kind::Linear), true, true),
        ]
    );
    // The static schema agrees: every variant's paths, the roles, no tuple node.
    let mut schema = Vec::new();
    walk(&Model::SCHEMA, |node| schema.push((node.path().to_string(), node.kind())));
    assert_eq!(
        schema,
        [
            (String::new(), None),
            ("gate".to_owned(), Some(Kind::Router)),
            ("self_attn".to_owned(), None),
            ("self_attn.q_proj".to_owned(), Some(Kind::Linear)),
            ("self_attn.q_a_proj".to_owned(), Some(Kind::Linear)),
            ("self_attn.q_b_proj".to_owned(), Some(Kind::Linear)),
            ("self_attn.o_proj".to_owned(), Some(Kind::Linear)),
            ("lm_head".to_owned(), Some(Kind::Linear)),
        ]
    );
    assert_eq!(moduletree::find_all_linear_modules(&model), ["q_a_proj", "q_b_proj", "o_proj"]);
    assert_eq!(moduletree::find_all_router_modules(&model), ["gate"]);
    assert!(moduletree::targets!(Model: "q_proj", "q_a_proj", "all-router").entries().len() == 3);
}
