//! The registry sees the non-generic model types of `moduletree-tests` (another crate of the
//! workspace), and a type's static schema gives the same answers as an instance whose containers
//! are non-empty, except where the docs say they differ: an empty `Vec`, a `None`, an enum
//! variant not taken.

use std::collections::BTreeSet;

use moduletree::registry::{self, LookupError};
use moduletree::{
    Kind, ModuleTree, Walk, find_all_embedding_modules, find_all_linear_modules,
    find_all_router_modules, named_modules,
};
use moduletree_tests::models::{
    DeepseekMlp, DeepseekV3, Llama, Mixtral, Qwen2Moe, deepseek_v3, llama, mixtral, qwen2_moe,
};

/// A second `Mlp`, to make the short name ambiguous.
mod local {
    use moduletree::ModuleTree;

    #[derive(ModuleTree)]
    pub struct Mlp {
        #[layer(kind = "linear")]
        pub fc: (),
    }

    #[derive(ModuleTree)]
    #[tree(register = false)]
    pub struct Unregistered {
        #[layer(kind = "linear")]
        pub fc: (),
    }
}

#[test]
fn finds_types_defined_in_another_crate() {
    for name in [
        "LlamaDecoderLayer",
        "Attention",
        "MixtralSparseMoe",
        "Qwen2MoeMlp",
        "DeepseekDecoderLayer",
        "TopkRouter",
    ] {
        let found = registry::find(name);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        assert_eq!(found[0].name, name);
        assert_eq!(found[0].module_path, "moduletree_tests::models");
    }
    let layer = registry::find_one("moduletree_tests::models::LlamaDecoderLayer").unwrap();
    let paths: Vec<String> = named_modules(layer.schema)
        .into_iter()
        .map(|module| module.path().to_owned())
        .collect();
    assert_eq!(&paths[..3], ["", "self_attn", "self_attn.q_proj"]);
}

#[test]
fn generic_types_are_not_registered() {
    // `ForCausalLm<L>` and `Decoder<L>` have no single schema.
    assert!(registry::find("ForCausalLm").is_empty());
    assert!(registry::find("Decoder").is_empty());
    assert!(matches!(
        registry::find_one("ForCausalLm"),
        Err(LookupError::NotFound { .. })
    ));
}

#[test]
fn opt_out_is_not_registered() {
    let _ = local::Unregistered { fc: () };
    assert!(registry::find("Unregistered").is_empty());
}

#[test]
fn lists_sorted_by_full_name() {
    let names: Vec<String> = registry::types()
        .iter()
        .map(|registration| registration.full_name())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(
        names.contains(&"registry::local::Mlp".to_owned()),
        "{names:?}"
    );
}

#[test]
fn a_short_name_shared_by_two_types_is_ambiguous() {
    assert_eq!(registry::find("Mlp").len(), 2);
    match registry::find_one("Mlp") {
        Err(LookupError::Ambiguous { candidates, .. }) => assert_eq!(
            candidates,
            ["moduletree_tests::models::Mlp", "registry::local::Mlp"]
        ),
        other => panic!("expected an ambiguity, got {other:?}"),
    }
    let local = registry::find_one("registry::local::Mlp").unwrap();
    assert_eq!(find_all_linear_modules(local.schema), ["fc"]);
}

#[test]
fn a_missing_name_suggests_similar_ones() {
    let error = registry::find_one("llamadecoder").unwrap_err();
    assert_eq!(
        error,
        LookupError::NotFound {
            name: "llamadecoder".to_owned(),
            similar: vec!["moduletree_tests::models::LlamaDecoderLayer".to_owned()],
        }
    );
    assert_eq!(
        error.to_string(),
        "no registered model type is named `llamadecoder`; did you mean \
         moduletree_tests::models::LlamaDecoderLayer?"
    );
}

#[test]
fn top_level_types_are_the_ones_no_other_type_contains() {
    let top: Vec<&str> = registry::top_level()
        .iter()
        .filter(|registration| registration.module_path == "moduletree_tests::models")
        .map(|registration| registration.name)
        .collect();
    assert_eq!(
        top,
        [
            "DeepseekDecoderLayer",
            "LlamaDecoderLayer",
            "MixtralDecoderLayer",
            "Qwen2MoeDecoderLayer"
        ]
    );
}

/// Every distinct normalized node with the facts the targets read.
fn shape_of<T: Walk + ?Sized>(
    model: &T,
) -> BTreeSet<(String, &'static str, Option<Kind>, bool, bool)> {
    named_modules(model)
        .into_iter()
        .map(|module| {
            (
                module.normalized().to_string(),
                module.type_name(),
                module.kind(),
                module.is_expert(),
                module.is_head(),
            )
        })
        .collect()
}

fn assert_agree<T: ModuleTree>(model: &T) {
    let schema = &T::SCHEMA;
    assert_eq!(shape_of(model), shape_of(schema));
    assert_eq!(
        find_all_linear_modules(model),
        find_all_linear_modules(schema)
    );
    assert_eq!(
        find_all_embedding_modules(model),
        find_all_embedding_modules(schema)
    );
    assert_eq!(
        find_all_router_modules(model),
        find_all_router_modules(schema)
    );
}

#[test]
fn schema_and_instance_agree_when_every_container_is_filled() {
    assert_agree::<Llama>(&llama(2));
    assert_agree::<Mixtral>(&mixtral(2, 3));
    assert_agree::<Qwen2Moe>(&qwen2_moe(4, 3, &[0]));
    // Every variant of `DeepseekMlp` taken by some layer.
    let mut model = deepseek_v3(4, 2, 3, false);
    let fused = deepseek_v3(4, 2, 3, true);
    model.model.layers[3].mlp = fused.model.layers[3].mlp.clone();
    assert!(matches!(model.model.layers[3].mlp, DeepseekMlp::Fused(_)));
    assert_agree::<DeepseekV3>(&model);
}

#[test]
fn schema_names_what_an_empty_vec_does_not_hold() {
    let empty = llama(0);
    assert!(find_all_linear_modules(&empty).is_empty());
    assert_eq!(
        find_all_linear_modules(&Llama::SCHEMA),
        [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj"
        ]
    );
}

#[test]
fn schema_names_the_variants_an_instance_does_not_take() {
    let model = deepseek_v3(4, 2, 3, false);
    let instance = find_all_linear_modules(&model);
    let schema = find_all_linear_modules(&DeepseekV3::SCHEMA);
    assert!(
        !instance.contains(&"gate_up_proj".to_owned()),
        "{instance:?}"
    );
    assert!(schema.contains(&"gate_up_proj".to_owned()), "{schema:?}");
    let missing: Vec<&String> = schema
        .iter()
        .filter(|name| !instance.contains(name))
        .collect();
    assert_eq!(missing, ["gate_up_proj"]);
}

#[test]
fn schema_names_what_a_none_does_not_hold() {
    // An `Option` of a module is transparent: `None` has no node, the schema has one.
    #[derive(ModuleTree)]
    #[layer(kind = "linear")]
    struct Proj;
    #[derive(ModuleTree)]
    struct Block {
        base: Proj,
        extra: Option<Proj>,
    }
    let none = Block {
        base: Proj,
        extra: None,
    };
    assert_eq!(find_all_linear_modules(&none), ["base"]);
    assert_eq!(find_all_linear_modules(&Block::SCHEMA), ["base", "extra"]);
    let some = Block {
        base: Proj,
        extra: Some(Proj),
    };
    assert_agree(&some);
}

mod fixture_common;
mod schema_common;

/// The full static schema of every model type of this file, pinned.
#[test]
fn schemas_are_pinned() {
    let out = schema_common::schemas(
        &["registry", "moduletree_tests"],
        &[
            ("Llama", &Llama::SCHEMA),
            ("Mixtral", &Mixtral::SCHEMA),
            ("Qwen2Moe", &Qwen2Moe::SCHEMA),
            ("DeepseekV3", &DeepseekV3::SCHEMA),
        ],
    );
    fixture_common::assert_snapshot("schemas/registry.txt", &out);
}
