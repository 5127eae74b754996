//! The candle Llama against PyTorch: base, tied, LoRA (attached, merged into slots, merged into
//! plain `candle_nn::Linear`) and rsLoRA logits of `fixtures/llama_tiny` within 1e-4.
#![cfg(feature = "candle")]

mod candle_common;
mod fixture_common;

use candle_common::{assert_close, fixture, load, logits, reference, snapshot};
use candle_core::Device;
use candle_nn::Linear;
use moduletree::candle::{LoadMode, LoraLinear, load_peft_adapter};
use moduletree::walk_mut;
use moduletree_candle_examples::llama::LlamaForCausalLM;

const TOLERANCE: f32 = 1e-4;

#[test]
fn base_logits_match_pytorch_with_slots_and_without() {
    let reference = reference();
    let slots = load::<LoraLinear>("model");
    assert_close(
        &logits(&slots, &reference.tokens),
        &reference.logits["base"],
        TOLERANCE,
        "slots",
    );
    let plain = load::<Linear>("model");
    assert_close(
        &logits(&plain, &reference.tokens),
        &reference.logits["base"],
        TOLERANCE,
        "plain",
    );
}

#[test]
fn tied_embeddings_match_pytorch() {
    let reference = reference();
    let model = load::<LoraLinear>("model_tied");
    assert_close(
        &logits(&model, &reference.tokens),
        &reference.logits["tied_base"],
        TOLERANCE,
        "tied",
    );
    // the head is the embedding table itself
    assert_eq!(
        model.lm_head.weight().to_vec2::<f32>().unwrap(),
        model
            .model
            .embed_tokens
            .embeddings()
            .to_vec2::<f32>()
            .unwrap()
    );
}

#[test]
fn attached_adapter_matches_pytorch() {
    let reference = reference();
    for (dir, key) in [("adapter", "lora"), ("adapter_rslora", "rslora")] {
        let mut model = load::<LoraLinear>("model");
        let adapted = load_peft_adapter(&mut model, fixture(dir), LoadMode::Attach).unwrap();
        let expected_count = if dir == "adapter" { 3 * 2 } else { 4 * 2 };
        assert_eq!(adapted.len(), expected_count, "{dir}: {adapted:?}");
        assert_close(
            &logits(&model, &reference.tokens),
            &reference.logits[key],
            TOLERANCE,
            dir,
        );
    }
}

#[test]
fn adapter_merged_into_plain_linear_weights_matches_pytorch() {
    let reference = reference();
    for (dir, key) in [("adapter", "lora"), ("adapter_rslora", "rslora")] {
        let mut model = load::<Linear>("model");
        load_peft_adapter(&mut model, fixture(dir), LoadMode::Merge).unwrap();
        assert_close(
            &logits(&model, &reference.tokens),
            &reference.logits[key],
            TOLERANCE,
            dir,
        );
    }
}

#[test]
fn merging_and_unmerging_slots_keeps_the_output() {
    let reference = reference();
    let mut model = load::<LoraLinear>("model");
    let before = snapshot(&model);
    load_peft_adapter(&mut model, fixture("adapter"), LoadMode::Attach).unwrap();
    let mut merged = 0;
    walk_mut(&mut model, |node| {
        if let Some(slot) = node.downcast_mut::<LoraLinear>()
            && slot.active_adapter().is_some()
        {
            slot.merge().unwrap();
            assert!(slot.is_merged());
            merged += 1;
        }
    });
    assert_eq!(merged, 6);
    assert_close(
        &logits(&model, &reference.tokens),
        &reference.logits["lora"],
        TOLERANCE,
        "merged",
    );
    walk_mut(&mut model, |node| {
        if let Some(slot) = node.downcast_mut::<LoraLinear>() {
            slot.unmerge().unwrap();
            slot.set_active_adapter(None).unwrap();
        }
    });
    assert_close(
        &logits(&model, &reference.tokens),
        &reference.logits["base"],
        TOLERANCE,
        "unmerged",
    );
    // unmerge is the inverse of merge up to float rounding
    let bases = |entries: Vec<(String, Vec<f32>)>| {
        entries
            .into_iter()
            .filter(|(name, _)| name.ends_with(" base"))
            .collect::<Vec<_>>()
    };
    let (before, after) = (bases(before), bases(snapshot(&model)));
    assert_eq!(before.len(), 14);
    for ((name, old), (new_name, new)) in before.iter().zip(&after) {
        assert_eq!(name, new_name);
        let diff = old
            .iter()
            .zip(new)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-6, "{name}: {diff}");
    }
}

#[test]
fn loading_the_merge_mode_into_slots_folds_the_weights() {
    let reference = reference();
    let mut model = load::<LoraLinear>("model");
    load_peft_adapter(&mut model, fixture("adapter"), LoadMode::Merge).unwrap();
    let mut holding = 0;
    moduletree::walk(&model, |node| {
        if let Some(slot) = node.downcast_ref::<LoraLinear>() {
            holding += slot.adapters().count();
        }
    });
    assert_eq!(holding, 0, "merge mode adds no adapter");
    assert_close(
        &logits(&model, &reference.tokens),
        &reference.logits["lora"],
        TOLERANCE,
        "merge into slots",
    );
}

#[test]
fn module_paths_are_those_of_the_checkpoint() {
    let model = load::<LoraLinear>("model");
    let tensors =
        candle_core::safetensors::load(fixture("model").join("model.safetensors"), &Device::Cpu)
            .unwrap();
    // Every leaf layer's path plus `.weight` names a tensor of the Hugging Face checkpoint, and
    // every tensor of the checkpoint belongs to a leaf.
    let mut leaves = Vec::new();
    moduletree::walk(&model, |node| {
        if node.is_layer() {
            leaves.push(format!("{}.weight", node.path()));
        }
    });
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut sorted = leaves.clone();
    sorted.sort();
    assert_eq!(sorted.iter().collect::<Vec<_>>(), names);
    assert_eq!(
        moduletree::find_all_linear_modules(&model),
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
    assert_eq!(
        moduletree::find_all_embedding_modules(&model),
        ["embed_tokens"]
    );
    // the static schema agrees with the instance
    assert_eq!(
        moduletree::find_all_linear_modules(
            &<LlamaForCausalLM<LoraLinear> as moduletree::ModuleTree>::SCHEMA
        ),
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

/// transformers 5.x writes the RoPE base under `rope_parameters`; both forms load alike.
#[test]
fn reads_the_config_of_transformers_5() {
    let reference = reference();
    let dir = candle_common::scratch("transformers5");
    std::fs::copy(
        fixture("model").join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(fixture("model").join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    let object = config.as_object_mut().unwrap();
    object.remove("rope_theta");
    object.remove("rope_scaling");
    object.insert(
        "rope_parameters".into(),
        serde_json::json!({ "rope_theta": 10000.0, "rope_type": "default" }),
    );
    object.insert("transformers_version".into(), "5.0.0".into());
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let model = LlamaForCausalLM::<LoraLinear>::load(&dir, &Device::Cpu).unwrap();
    assert_close(
        &logits(&model, &reference.tokens),
        &reference.logits["base"],
        TOLERANCE,
        "5.x config",
    );

    config["rope_parameters"]["rope_type"] = "llama3".into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let error = LlamaForCausalLM::<LoraLinear>::load(&dir, &Device::Cpu).unwrap_err();
    assert!(error.to_string().contains("rope_type"), "{error}");
}
