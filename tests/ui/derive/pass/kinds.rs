//! Every built-in kind, on a type and on a field of a foreign type.

use moduletree::{Kind, ModuleTree, named_modules};

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
#[layer(kind = "grouped_linear")]
struct GroupedLinear;

#[derive(ModuleTree)]
#[layer(kind = "layernorm_linear")]
struct LayernormLinear;

#[derive(ModuleTree)]
#[layer(kind = "embedding")]
struct Embedding;

#[derive(ModuleTree)]
#[layer(kind = "router")]
struct Router;

#[derive(ModuleTree)]
#[layer(kind = "conv")]
struct Conv;

#[derive(ModuleTree)]
#[layer(kind = "norm")]
struct Norm;

#[derive(ModuleTree)]
struct OnTypes {
    linear: Linear,
    grouped_linear: GroupedLinear,
    layernorm_linear: LayernormLinear,
    embedding: Embedding,
    router: Router,
    conv: Conv,
    norm: Norm,
}

#[derive(ModuleTree)]
struct OnFields {
    #[layer(kind = "linear")]
    linear: [f32; 2],
    #[layer(kind = "grouped_linear")]
    grouped_linear: [f32; 2],
    #[layer(kind = "layernorm_linear")]
    layernorm_linear: [f32; 2],
    #[layer(kind = "embedding")]
    embedding: [f32; 2],
    #[layer(kind = "router")]
    router: [f32; 2],
    #[layer(kind = "conv")]
    conv: [f32; 2],
    #[layer(kind = "norm")]
    norm: [f32; 2],
}

fn kinds<T: ModuleTree>(model: &T) -> Vec<(String, Option<Kind>)> {
    named_modules(model)
        .into_iter()
        .map(|node| (node.path().to_owned(), node.kind()))
        .collect()
}

fn main() {
    let expected: Vec<(String, Option<Kind>)> = [
        ("", None),
        ("linear", Some(Kind::Linear)),
        ("grouped_linear", Some(Kind::GroupedLinear)),
        ("layernorm_linear", Some(Kind::LayernormLinear)),
        ("embedding", Some(Kind::Embedding)),
        ("router", Some(Kind::Router)),
        ("conv", Some(Kind::Conv)),
        ("norm", Some(Kind::Norm)),
    ]
    .into_iter()
    .map(|(path, kind)| (path.to_owned(), kind))
    .collect();
    let on_types = OnTypes {
        linear: Linear,
        grouped_linear: GroupedLinear,
        layernorm_linear: LayernormLinear,
        embedding: Embedding,
        router: Router,
        conv: Conv,
        norm: Norm,
    };
    assert_eq!(kinds(&on_types), expected);
    let on_fields = OnFields {
        linear: [0.0; 2],
        grouped_linear: [0.0; 2],
        layernorm_linear: [0.0; 2],
        embedding: [0.0; 2],
        router: [0.0; 2],
        conv: [0.0; 2],
        norm: [0.0; 2],
    };
    assert_eq!(kinds(&on_fields), expected);
    // Every name the derive accepts is a name the runtime knows, and the other way round.
    for name in Kind::NAMES {
        assert!(
            expected
                .iter()
                .any(|(_, kind)| kind.map(Kind::name) == Some(name))
        );
    }
}
