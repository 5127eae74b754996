//! Adapters written by PEFT 0.21.2 itself (`fixtures/peft_core`, made by its `make.py`) on the
//! tiny Llama of `fixtures/llama_tiny`: `modules_to_save = ["lm_head"]` with a perturbed head,
//! `all-linear` with `exclude_modules`, a list with `layers_to_transform` + `layers_pattern`,
//! and LoRA on `embed_tokens` and `lm_head`. Each loads into the candle Llama and reproduces
//! PyTorch's logits within 1e-4, merged into plain layers and attached to slots where the model
//! has them, and saving it again writes PEFT's tensor names and shapes.
#![cfg(feature = "candle")]

mod candle_common;
mod fixture_common;

use std::path::{Path, PathBuf};

use candle_common::{
    assert_close, json_tokens, listed_shapes, load, logits, read_json, saved_shapes, table,
};
use candle_nn::Linear;
use moduletree::candle::{LoadMode, LoraLinear, load_peft_adapter, save_peft_adapter};
use moduletree::peft::LoraConfig;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/peft_core")
}

fn logits_json() -> serde_json::Value {
    read_json(&fixtures().join("logits.json"))
}

fn tokens() -> Vec<u32> {
    json_tokens(&logits_json())
}

const UNTIED: [&str; 4] = [
    "mts_lm_head",
    "all_linear_filtered",
    "layers_filtered",
    "embed_head",
];

#[test]
fn peft_adapters_reproduce_pytorchs_logits_merged() {
    let expected = logits_json();
    for name in UNTIED {
        let reference = &expected["adapters"][name];
        let mut model = load::<Linear>("model");
        assert_close(
            &logits(&model, &tokens()),
            &table(&reference["base"]),
            1e-4,
            &format!("{name} base"),
        );
        load_peft_adapter(&mut model, fixtures().join(name), LoadMode::Merge)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let found = logits(&model, &tokens());
        assert_close(&found, &table(&reference["attached"]), 1e-4, name);
        assert_close(&found, &table(&reference["merged"]), 1e-4, name);
    }
}

#[test]
fn peft_adapters_on_projections_attach_to_slots() {
    // The example's Llama has slots for the projections; the head and the embedding are plain.
    let expected = logits_json();
    for name in ["mts_lm_head", "all_linear_filtered", "layers_filtered"] {
        let mut model = load::<LoraLinear>("model");
        load_peft_adapter(&mut model, fixtures().join(name), LoadMode::Attach)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_close(
            &logits(&model, &tokens()),
            &table(&expected["adapters"][name]["attached"]),
            1e-4,
            name,
        );
    }
}

#[test]
fn the_selection_decides_what_loads() {
    // `all_linear_filtered` excludes `o_proj` and layer 0's `gate_proj`; `layers_filtered` keeps
    // layer 1 only: the adapted layers are exactly those PEFT adapted.
    let mut model = load::<LoraLinear>("model");
    let adapted = load_peft_adapter(
        &mut model,
        fixtures().join("layers_filtered"),
        LoadMode::Attach,
    )
    .unwrap();
    assert!(
        adapted
            .iter()
            .all(|layer| layer.path.starts_with("model.layers.1.")
                && !layer.path.ends_with("o_proj")),
        "{adapted:?}"
    );
    let mut model = load::<LoraLinear>("model");
    let adapted = load_peft_adapter(
        &mut model,
        fixtures().join("all_linear_filtered"),
        LoadMode::Attach,
    )
    .unwrap();
    let paths: Vec<&str> = adapted.iter().map(|layer| layer.path.as_str()).collect();
    assert!(
        !paths.iter().any(|path| path.ends_with("o_proj")),
        "{paths:?}"
    );
    assert!(
        !paths.contains(&"model.layers.0.mlp.gate_proj"),
        "{paths:?}"
    );
    assert!(paths.contains(&"model.layers.1.mlp.gate_proj"), "{paths:?}");
}

#[test]
fn saving_writes_pefts_names_and_shapes() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("peft_expected.json")).unwrap(),
    )
    .unwrap();
    for name in ["all_linear_filtered", "layers_filtered", "mts_lm_head"] {
        let mut model = load::<LoraLinear>("model");
        load_peft_adapter(&mut model, fixtures().join(name), LoadMode::Attach).unwrap();
        let config = LoraConfig::from_json(
            &std::fs::read_to_string(fixtures().join(name).join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let out = tempfile::tempdir().unwrap();
        save_peft_adapter(&model, out.path(), &config).unwrap();
        assert_eq!(
            saved_shapes(out.path()),
            listed_shapes(&expected["adapters"][name]["tensors"]),
            "{name}"
        );
        // The saved config reads back to the same model.
        let mut again = load::<Linear>("model");
        load_peft_adapter(&mut again, out.path(), LoadMode::Merge).unwrap();
        assert_close(
            &logits(&again, &tokens()),
            &table(&logits_json()["adapters"][name]["attached"]),
            1e-4,
            name,
        );
    }
}

#[test]
fn tied_embeddings_take_the_delta_once() {
    // `ensure_weight_tying`: PEFT saves the head's factors (the embedding's, transposed) under
    // the head's name though `target_modules` names only the embedding. Merged here, embedding
    // and head each get the delta once and reproduce PEFT's *attached* logits; PEFT 0.21.2's own
    // `merge_and_unload` adds the delta twice to the shared matrix.
    let expected = logits_json();
    let reference = &expected["adapters"]["tied"];
    let peft_merged_error =
        candle_common::max_diff(&table(&reference["merged"]), &table(&reference["attached"]));
    assert!(peft_merged_error > 0.5, "{peft_merged_error}");
    let mut model = load::<Linear>("model_tied");
    assert_close(
        &logits(&model, &tokens()),
        &table(&reference["base"]),
        1e-4,
        "tied base",
    );
    let adapted = load_peft_adapter(&mut model, fixtures().join("tied"), LoadMode::Merge).unwrap();
    let paths: Vec<&str> = adapted.iter().map(|layer| layer.path.as_str()).collect();
    assert_eq!(paths, ["model.embed_tokens", "lm_head"]);
    assert_close(
        &logits(&model, &tokens()),
        &table(&reference["attached"]),
        1e-4,
        "tied merged",
    );
}
