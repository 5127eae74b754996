//! Specs shared across architectures: an optional entry (`?v_proj`) matches where the layer
//! exists and is reported where it does not; `"all-linear"` as a list entry means the shorthand.

use moduletree::ModuleTree;
use moduletree::peft::LoraConfig;
use moduletree::target::{Pattern, TargetSpec};

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

/// Multi-head latent attention: no `v_proj`.
#[derive(ModuleTree)]
struct Latent {
    q_proj: Linear,
    kv_b_proj: Linear,
    o_proj: Linear,
}

#[derive(ModuleTree)]
struct Model {
    #[tree(layers)]
    layers: Vec<Latent>,
    #[layer(kind = "linear", head)]
    lm_head: Linear,
}

fn model() -> Model {
    Model {
        layers: (0..2)
            .map(|_| Latent {
                q_proj: Linear,
                kv_b_proj: Linear,
                o_proj: Linear,
            })
            .collect(),
        lm_head: Linear,
    }
}

#[test]
fn an_optional_entry_matches_where_present_and_is_reported_where_absent() {
    let spec = TargetSpec::parse(["q_proj", "?v_proj"]).unwrap();
    let resolution = spec.resolve(&model()).unwrap();
    assert_eq!(
        resolution.paths().collect::<Vec<_>>(),
        ["layers.0.q_proj", "layers.1.q_proj"]
    );
    let absent = &resolution.entries()[1];
    assert_eq!((absent.entry.as_str(), absent.selected), ("?v_proj", 0));

    // Without the mark, the same spec is refused, naming the entry.
    let error = TargetSpec::parse(["q_proj", "v_proj"])
        .unwrap()
        .resolve(&model())
        .unwrap_err();
    assert!(error.to_string().contains("`v_proj` matches no"), "{error}");

    // The mark parses on every kind of entry and keeps the offsets of errors right.
    assert!(Pattern::parse("?re:.*v_proj").unwrap().is_optional());
    assert!(Pattern::parse("?all-experts").unwrap().is_optional());
    assert_eq!(Pattern::parse("?layers..q").unwrap_err().offset, 8);
}

#[test]
fn peft_configs_take_optional_entries_and_all_linear_in_a_list() {
    let config = LoraConfig::new(8, 16.0).with_target_modules(["q_proj", "?v_proj"]);
    let resolution = config.target_spec().unwrap().resolve(&model()).unwrap();
    assert_eq!(resolution.layers().len(), 2);

    let config = LoraConfig::new(8, 16.0).with_target_modules(["all-linear"]);
    let resolution = config.target_spec().unwrap().resolve(&model()).unwrap();
    // Every linear layer but the head.
    assert_eq!(resolution.layers().len(), 6);
    assert!(resolution.paths().all(|path| path != "lm_head"));
}

#[test]
fn all_linear_keeps_peft_meaning_outside_target_modules() {
    // PEFT compares the string form case-insensitively.
    let config =
        LoraConfig::from_json(r#"{"r": 8, "lora_alpha": 16, "target_modules": "ALL-LINEAR"}"#)
            .unwrap();
    assert_eq!(
        config
            .target_spec()
            .unwrap()
            .resolve(&model())
            .unwrap()
            .layers()
            .len(),
        6
    );
    // As an exclusion it would exclude every linear here and nothing in PEFT: refused.
    let config = LoraConfig::from_json(
        r#"{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "exclude_modules": "all-linear"}"#,
    )
    .unwrap();
    let error = config.target_spec().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("`all-linear` is a shorthand of `target_modules` only"),
        "{error}"
    );
    // In an exclusion list it is a name, as in PEFT: it excludes nothing.
    let config = LoraConfig::from_json(
        r#"{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "exclude_modules": ["all-linear"]}"#,
    )
    .unwrap();
    let resolution = config.target_spec().unwrap().resolve(&model()).unwrap();
    assert_eq!(resolution.layers().len(), 2);
}

#[test]
fn a_filter_that_removes_every_layer_says_which_and_lists_the_indices() {
    let error = TargetSpec::parse(["q_proj"])
        .unwrap()
        .with_layers([9])
        .resolve(&model())
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the layer filter (layers [9]) keeps none of the layers the targets match; the layer indices that exist are [0, 1]"
    );

    let config = LoraConfig::from_json(
        r#"{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "layers_to_transform": [42]}"#,
    )
    .unwrap();
    let error = config.target_spec().unwrap().resolve(&model()).unwrap_err();
    assert!(
        error.to_string().contains("(layers [42]") && error.to_string().contains("[0, 1]"),
        "{error}"
    );

    let config = LoraConfig::from_json(
        r#"{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "layers_to_transform": [0], "layers_pattern": "blocks"}"#,
    )
    .unwrap();
    let error = config.target_spec().unwrap().resolve(&model()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the layer filter (layers [0] after `layers_pattern` [\"blocks\"]) keeps none of the layers the targets match; no matched layer has a layer index where the filter reads it (does `layers_pattern` name a module of the model?)"
    );
}

#[test]
fn a_native_exclusion_of_a_module_excludes_its_subtree_and_peft_keeps_its_meaning() {
    #[derive(ModuleTree)]
    struct Mlp {
        up_proj: Linear,
        down_proj: Linear,
    }
    #[derive(ModuleTree)]
    struct Moe {
        #[expert]
        experts: Vec<Mlp>,
        #[expert(shared)]
        shared_experts: Mlp,
    }
    let moe = Moe {
        experts: vec![Mlp {
            up_proj: Linear,
            down_proj: Linear,
        }],
        shared_experts: Mlp {
            up_proj: Linear,
            down_proj: Linear,
        },
    };
    let native = TargetSpec::parse(["up_proj"])
        .unwrap()
        .with_exclusions(["shared_experts"])
        .unwrap();
    assert_eq!(
        native.resolve(&moe).unwrap().paths().collect::<Vec<_>>(),
        ["experts.0.up_proj"]
    );
    // PEFT's `exclude_modules` matches the layer's own name: `shared_experts` leaves
    // `shared_experts.up_proj` in.
    let config = LoraConfig::from_json(
        r#"{"r": 8, "lora_alpha": 16, "target_modules": ["up_proj"], "exclude_modules": ["shared_experts"]}"#,
    )
    .unwrap();
    let resolution = config.target_spec().unwrap().resolve(&moe).unwrap();
    assert_eq!(
        resolution.paths().collect::<Vec<_>>(),
        ["experts.0.up_proj", "shared_experts.up_proj"]
    );
}

mod fixture_common;
mod schema_common;

/// The full static schema of every model type of this file, pinned.
#[test]
fn schemas_are_pinned() {
    let out = schema_common::schemas(&["targets_shared"], &[]);
    fixture_common::assert_snapshot("schemas/targets_shared.txt", &out);
}
