//! The compile-time matcher (`check_entry`, a `const fn` over a type's static schema) agrees
//! with the run-time matcher resolving the same entry against the same schema, on every test
//! model; and whatever an instance selects, its schema accepts.

use moduletree::target::{
    PatternKind, ResolveError, SchemaCheck, TargetError, TargetSpec, check_entry,
};
use moduletree::{ModuleTree, Schema, Walk};
use moduletree_tests::models::{
    DeepseekV3, Llama, Mixtral, Qwen2Moe, deepseek_v3, llama, mixtral, qwen2_moe,
};
use proptest::prelude::*;

/// The run-time verdict on one entry, in the compile-time matcher's terms.
fn run_time<T: Walk + ?Sized>(model: &T, entry: &str) -> SchemaCheck {
    // `targets!` refuses every `re:` entry, well-formed or not.
    if entry.starts_with("re:") {
        return SchemaCheck::Regex;
    }
    // `targets!` checks one type, where an entry is there or not: an optional entry (`?q_proj`),
    // for specs shared across architectures, is no pattern of its.
    if entry.starts_with('?') {
        return SchemaCheck::Optional;
    }
    let spec = match TargetSpec::parse([entry]) {
        Ok(spec) => spec,
        Err(_) => return SchemaCheck::Malformed,
    };
    assert_ne!(spec.entries()[0].kind(), PatternKind::Regex);
    match spec.resolve(model) {
        Ok(_) => SchemaCheck::Layer,
        Err(ResolveError { errors }) => match errors.as_slice() {
            [TargetError::NoMatch { .. }] => SchemaCheck::NoMatch,
            [TargetError::NotALayer { .. }] => SchemaCheck::OnlyNonLayers,
            other => panic!("{entry}: unexpected {other:?}"),
        },
    }
}

const ENTRIES: &[&str] = &[
    "q_proj",
    "k_proj",
    "self_attn.q_proj",
    "layers.<>.mlp.down_proj",
    "layers.3.self_attn.o_proj",
    "^model.layers.<>.self_attn.q_proj",
    "^q_proj",
    "^lm_head",
    "lm_head",
    "all-linear",
    "all-embedding",
    "all-router",
    "experts.<>.w1",
    "experts.*.w2",
    "experts.<>.up_proj",
    "experts.gate_up_proj",
    "shared_expert.gate_proj",
    "shared_experts.down_proj",
    "shared_expert_gate",
    "mlp.gate",
    "block_sparse_moe.gate",
    "gate",
    "kv_a_proj_with_mqa",
    "q_a_layernorm",
    "**.w3",
    "model.**.o_proj",
    "**",
    "*",
    "<>",
    "<>.mlp",
    "self_attn",
    "mlp",
    "layers",
    "^model.layers",
    "model",
    "experts",
    "embed_tokens",
    "norm",
    "linear_fc1x",
    "layers.01.q_proj",
    "layers..q_proj",
    "layers.<1>.q_proj",
    "all-linaer",
    "^",
    "",
    "a.**.**.b",
    "re:.*q_proj",
];

fn agree(schema: &Schema, name: &str) {
    for entry in ENTRIES {
        assert_eq!(
            check_entry(schema, entry),
            run_time(schema, entry),
            "{name}: `{entry}`"
        );
    }
}

#[test]
fn const_and_run_time_matchers_agree_on_every_test_model() {
    agree(&Llama::SCHEMA, "Llama");
    agree(&Mixtral::SCHEMA, "Mixtral");
    agree(&Qwen2Moe::SCHEMA, "Qwen2Moe");
    agree(&DeepseekV3::SCHEMA, "DeepseekV3");
}

#[test]
fn const_matcher_verdicts_on_llama() {
    let schema = &Llama::SCHEMA;
    assert_eq!(check_entry(schema, "q_proj"), SchemaCheck::Layer);
    assert_eq!(check_entry(schema, "all-router"), SchemaCheck::NoMatch);
    assert_eq!(check_entry(schema, "self_attn"), SchemaCheck::OnlyNonLayers);
    assert_eq!(check_entry(schema, "q_proj_norm"), SchemaCheck::NoMatch);
    assert_eq!(check_entry(schema, "layers..q"), SchemaCheck::Malformed);
    assert_eq!(check_entry(schema, "re:.*"), SchemaCheck::Regex);
    // The head is a layer, but not of the `all-linear` family on its own.
    assert_eq!(check_entry(schema, "^lm_head"), SchemaCheck::Layer);
    // A constant context evaluates it.
    const FOUND: SchemaCheck = check_entry(&Mixtral::SCHEMA, "experts.<>.w1");
    assert_eq!(FOUND, SchemaCheck::Layer);
}

#[test]
fn what_an_instance_selects_its_schema_accepts() {
    fn check<T: ModuleTree>(model: &T, name: &str) {
        for entry in ENTRIES {
            if run_time(model, entry) == SchemaCheck::Layer {
                assert_eq!(
                    check_entry(&T::SCHEMA, entry),
                    SchemaCheck::Layer,
                    "{name}: `{entry}`"
                );
            }
        }
    }
    check(&llama(4), "llama");
    check(&mixtral(4, 4), "mixtral");
    check(&qwen2_moe(4, 4, &[0, 2]), "qwen2_moe");
    check(&deepseek_v3(4, 1, 4, false), "deepseek_v3");
    check(&deepseek_v3(4, 1, 4, true), "deepseek_v3 fused");
}

#[test]
fn targets_macro_evaluates_to_a_run_time_spec() {
    let spec = moduletree::targets!(Mixtral: "q_proj", "layers.<>.block_sparse_moe.experts.<>.w2", "all-router");
    assert_eq!(
        spec,
        TargetSpec::parse([
            "q_proj",
            "layers.<>.block_sparse_moe.experts.<>.w2",
            "all-router"
        ])
        .unwrap()
    );
    let resolution = spec.resolve(&mixtral(2, 2)).unwrap();
    assert_eq!(resolution.layers().len(), 2 + 4 + 2);
}

/// Entries made of the test models' own names and every kind of segment.
fn entry() -> impl Strategy<Value = String> {
    let segment = prop::sample::select(vec![
        "model",
        "layers",
        "self_attn",
        "q_proj",
        "mlp",
        "experts",
        "w1",
        "up_proj",
        "gate",
        "shared_expert",
        "lm_head",
        "0",
        "1",
        "3",
        "<>",
        "*",
        "**",
        "",
        "x",
        "01",
    ]);
    (
        any::<bool>(),
        prop::collection::vec(segment, 1..6),
        prop::sample::select(vec!["", "all-linear", "all-router", "all-x"]),
    )
        .prop_map(|(anchored, segments, shorthand)| {
            if shorthand.is_empty() {
                format!("{}{}", if anchored { "^" } else { "" }, segments.join("."))
            } else {
                shorthand.to_owned()
            }
        })
}

proptest! {
    #[test]
    fn matchers_agree_on_generated_entries(entry in entry()) {
        for (schema, name) in [
            (&Llama::SCHEMA, "Llama"),
            (&Mixtral::SCHEMA, "Mixtral"),
            (&Qwen2Moe::SCHEMA, "Qwen2Moe"),
            (&DeepseekV3::SCHEMA, "DeepseekV3"),
        ] {
            prop_assert_eq!(check_entry(schema, &entry), run_time(schema, &entry), "{}: `{}`", name, entry);
        }
    }

    #[test]
    fn const_matcher_never_panics(entry in ".{0,80}") {
        let verdict = check_entry(&Mixtral::SCHEMA, &entry);
        prop_assert_eq!(verdict, run_time(&Mixtral::SCHEMA, &entry));
    }
}
