//! PEFT adapters in and out: round trips, the layout PEFT writes, the key forms PEFT's users
//! write, and every refusal, each checked to leave the model exactly as it was.
#![cfg(feature = "candle")]

mod candle_common;
mod fixture_common;

use std::collections::BTreeSet;

use candle_common::{
    adapter_variant, assert_close, fixture, load, logits, reference, scratch, snapshot,
};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, VarMap};
use moduletree::candle::{
    LoadMode, LoraConfig, LoraLinear, PeftError, apply_lora, load_peft_adapter,
    load_peft_adapter_as, save_peft_adapter,
};
use moduletree::target::TargetSpec;
use moduletree_candle_examples::llama::LlamaForCausalLM;

fn expected(adapter: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("peft_expected.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value[adapter].clone()
}

/// The tensor names and shapes of a saved adapter, as `peft_expected.json` lists them.
fn saved_tensors(dir: &std::path::Path) -> serde_json::Value {
    let tensors =
        candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    let mut listed = serde_json::Map::new();
    for (name, tensor) in tensors {
        assert_eq!(tensor.dtype(), DType::F32);
        listed.insert(
            name,
            serde_json::json!({ "dtype": "float32", "shape": tensor.dims() }),
        );
    }
    serde_json::Value::Object(listed)
}

fn target_set(list: &serde_json::Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap().to_owned())
        .collect()
}

/// Every field we write has PEFT's value; every field that decides how PEFT loads is written.
fn assert_config_like_peft(saved: &serde_json::Value, peft: &serde_json::Value) {
    let saved = saved.as_object().unwrap();
    for key in [
        "r",
        "lora_alpha",
        "use_rslora",
        "peft_type",
        "bias",
        "target_modules",
        "lora_dropout",
        "use_dora",
        "fan_in_fan_out",
        "rank_pattern",
        "alpha_pattern",
        "init_lora_weights",
        "inference_mode",
        "modules_to_save",
        "layers_to_transform",
        "layers_pattern",
        "task_type",
        "target_parameters",
        "exclude_modules",
        "lora_bias",
    ] {
        assert!(saved.contains_key(key), "saved config lacks `{key}`");
    }
    for (key, value) in saved {
        if key == "target_modules" {
            assert_eq!(target_set(value), target_set(&peft[key]));
        } else {
            assert_eq!(value, &peft[key], "config field `{key}`");
        }
    }
}

fn read_json(path: std::path::PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn load_then_save_writes_what_peft_wrote() {
    for dir in ["adapter", "adapter_rslora"] {
        let mut model = load::<LoraLinear>("model");
        load_peft_adapter(&mut model, fixture(dir), LoadMode::Attach).unwrap();
        let config = LoraConfig::from_json(
            &std::fs::read_to_string(fixture(dir).join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let out = scratch("saved");
        save_peft_adapter(&model, &out, &config).unwrap();
        let peft = expected(dir);
        assert_eq!(saved_tensors(&out), peft["tensors"], "{dir}");
        // read back verbatim, the config keeps every field PEFT wrote
        // PEFT writes `target_modules` from a set, in no fixed order; the saved list is sorted.
        let sorted_targets = |mut config: serde_json::Value| {
            if let Some(list) = config["target_modules"].as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
            config
        };
        assert_eq!(
            sorted_targets(read_json(out.join("adapter_config.json"))),
            sorted_targets(peft["adapter_config"].clone()),
            "{dir}"
        );
        // the tensors are bit-for-bit those of the fixture
        let original = candle_core::safetensors::load(
            fixture(dir).join("adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let saved =
            candle_core::safetensors::load(out.join("adapter_model.safetensors"), &Device::Cpu)
                .unwrap();
        for (name, tensor) in &original {
            assert_eq!(
                tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                saved[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{name}"
            );
        }
    }
}

/// `apply_lora` → (perturb the adapters as training would) → save → load into a fresh model.
#[test]
fn apply_save_load_round_trip_matches_peft_layout() {
    let reference = reference();
    for (dir, config) in [
        (
            "adapter",
            LoraConfig::new(4, 12.0).with_target_modules(["q_proj", "v_proj", "down_proj"]),
        ),
        (
            "adapter_rslora",
            LoraConfig::new(4, 8.0).rslora(true).with_target_modules([
                "k_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
            ]),
        ),
    ] {
        let mut config = config;
        config.base_model_name_or_path = Some("model".to_owned());
        let mut model = load::<LoraLinear>("model");
        let varmap = VarMap::new();
        let untouched = logits(&model, &reference.tokens);
        let adapted = apply_lora(&mut model, &config, &varmap).unwrap();
        assert_eq!(varmap.all_vars().len(), 2 * adapted.len());
        // fresh adapters change nothing: B is zero
        assert_eq!(logits(&model, &reference.tokens), untouched, "fresh");
        // the variables carry PEFT's names
        {
            let data = varmap.data().lock().unwrap();
            let mut names: Vec<&String> = data.keys().collect();
            names.sort();
            let peft = expected(dir);
            let peft_names: Vec<&String> = peft["tensors"].as_object().unwrap().keys().collect();
            assert_eq!(names, peft_names);
            for (name, var) in data.iter() {
                let values = (var.as_tensor().ones_like().unwrap() * 0.05).unwrap();
                let noise = values.rand_like(-0.05, 0.05).unwrap();
                var.set(&noise).unwrap();
                let _ = name;
            }
        }
        let trained = logits(&model, &reference.tokens);
        assert!(
            candle_common::max_diff(&trained, &reference.logits["base"]) > 1e-3,
            "{dir}: perturbed adapters change the output"
        );
        let out = scratch("round-trip");
        save_peft_adapter(&model, &out, &config).unwrap();
        let peft = expected(dir);
        assert_eq!(saved_tensors(&out), peft["tensors"], "{dir}");
        assert_config_like_peft(
            &read_json(out.join("adapter_config.json")),
            &peft["adapter_config"],
        );

        let mut fresh = load::<LoraLinear>("model");
        load_peft_adapter(&mut fresh, &out, LoadMode::Attach).unwrap();
        assert_eq!(
            logits(&fresh, &reference.tokens),
            trained,
            "{dir}: identical after the round trip"
        );
        // and merged into plain weights, within float rounding
        let mut plain = load::<Linear>("model");
        load_peft_adapter(&mut plain, &out, LoadMode::Merge).unwrap();
        assert_close(&logits(&plain, &reference.tokens), &trained, 1e-4, dir);
    }
}

#[test]
fn saving_is_deterministic() {
    let mut model = load::<LoraLinear>("model");
    load_peft_adapter(&mut model, fixture("adapter"), LoadMode::Attach).unwrap();
    let config = LoraConfig::new(4, 12.0).with_target_modules(["q_proj", "v_proj", "down_proj"]);
    let (first, second) = (scratch("first"), scratch("second"));
    save_peft_adapter(&model, &first, &config).unwrap();
    save_peft_adapter(&model, &second, &config).unwrap();
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        assert_eq!(
            std::fs::read(first.join(file)).unwrap(),
            std::fs::read(second.join(file)).unwrap(),
            "{file}"
        );
    }
    // PEFT's metadata header
    let bytes = std::fs::read(first.join("adapter_model.safetensors")).unwrap();
    let header = String::from_utf8_lossy(&bytes[8..200]);
    assert!(
        header.contains(r#""__metadata__":{"format":"pt"}"#),
        "{header}"
    );
}

#[test]
fn a_saved_config_lists_the_shortest_suffixes_that_select_exactly_the_saved_layers() {
    let mut model = load::<LoraLinear>("model");
    load_peft_adapter(&mut model, fixture("adapter"), LoadMode::Attach).unwrap();
    let dir = scratch("no-targets");
    let saved: Vec<String> = save_peft_adapter(&model, &dir, &LoraConfig::new(4, 12.0))
        .unwrap()
        .into_iter()
        .map(|layer| layer.path)
        .collect();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["down_proj", "q_proj", "v_proj"])
    );
    // Read back with PEFT's meaning, the config selects exactly the saved layers.
    let spec = TargetSpec::from_peft_value(&config).unwrap();
    let selected: Vec<String> = spec
        .resolve(&model)
        .unwrap()
        .paths()
        .map(str::to_owned)
        .collect();
    assert_eq!(selected, saved);
}

#[test]
fn keys_without_prefix_and_with_an_adapter_name_load_alike() {
    let reference = reference();
    let strip = adapter_variant("adapter", |tensors, _| {
        *tensors = tensors
            .drain()
            .map(|(name, tensor)| (name.replace("base_model.model.", ""), tensor))
            .collect();
    });
    let infix = adapter_variant("adapter", |tensors, _| {
        *tensors = tensors
            .drain()
            .map(|(name, tensor)| (name.replace(".weight", ".default.weight"), tensor))
            .collect();
    });
    for dir in [strip, infix] {
        let mut model = load::<LoraLinear>("model");
        load_peft_adapter(&mut model, &dir, LoadMode::Attach).unwrap();
        assert_close(
            &logits(&model, &reference.tokens),
            &reference.logits["lora"],
            1e-4,
            "variant",
        );
    }
}

#[test]
fn two_named_adapters_switch() {
    let reference = reference();
    let mut model = load::<LoraLinear>("model");
    load_peft_adapter_as(&mut model, fixture("adapter"), LoadMode::Attach, "plain").unwrap();
    load_peft_adapter_as(
        &mut model,
        fixture("adapter_rslora"),
        LoadMode::Attach,
        "rs",
    )
    .unwrap();
    // the slots are disjoint here, so each slot's first adapter is active: both apply
    let both = logits(&model, &reference.tokens);
    assert!(candle_common::max_diff(&both, &reference.logits["lora"]) > 1e-3);
    moduletree::walk_mut(&mut model, |node| {
        if let Some(slot) = node.downcast_mut::<LoraLinear>()
            && slot.adapter("rs").is_some()
        {
            slot.set_active_adapter(None).unwrap();
        }
    });
    assert_close(
        &logits(&model, &reference.tokens),
        &reference.logits["lora"],
        1e-4,
        "plain only",
    );
}

/// Loads `dir` into a fresh model in `mode`, expects an error, and checks the model unchanged.
fn refused<P: moduletree_candle_examples::Projection>(
    dir: &std::path::Path,
    mode: LoadMode,
) -> (PeftError, LlamaForCausalLM<P>) {
    let mut model = load::<P>("model");
    let before = snapshot(&model);
    let error = load_peft_adapter(&mut model, dir, mode).unwrap_err();
    assert_eq!(
        snapshot(&model),
        before,
        "the model changed on error: {error}"
    );
    (error, model)
}

#[test]
fn refuses_tensors_that_name_no_layer() {
    let dir = adapter_variant("adapter", |tensors, _| {
        let a = Tensor::zeros((4, 16), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((16, 4), DType::F32, &Device::Cpu).unwrap();
        tensors.insert(
            "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight".into(),
            a,
        );
        tensors.insert(
            "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight".into(),
            b,
        );
    });
    for mode in [LoadMode::Attach, LoadMode::Merge] {
        let (error, _) = refused::<LoraLinear>(&dir, mode);
        assert!(
            matches!(&error, PeftError::NoSuchModule { path, .. } if path == "model.layers.7.self_attn.q_proj"),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("model.layers.7.self_attn.q_proj")
        );
    }
}

#[test]
fn refuses_tensors_that_are_not_lora_tensors() {
    let dir = adapter_variant("adapter", |tensors, _| {
        let magnitude = Tensor::ones(16, DType::F32, &Device::Cpu).unwrap();
        tensors.insert(
            "base_model.model.model.layers.1.self_attn.q_proj.lora_magnitude_vector".into(),
            magnitude,
        );
    });
    let (error, _) = refused::<LoraLinear>(&dir, LoadMode::Attach);
    assert!(
        matches!(&error, PeftError::UnknownTensor { key } if key.ends_with("lora_magnitude_vector")),
        "{error}"
    );
}

#[test]
fn refuses_half_pairs() {
    let dir = adapter_variant("adapter", |tensors, _| {
        tensors.remove("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight");
    });
    for mode in [LoadMode::Attach, LoadMode::Merge] {
        let (error, _) = refused::<LoraLinear>(&dir, mode);
        match &error {
            PeftError::Unpaired { path, missing, .. } => {
                assert_eq!(path, "model.layers.1.mlp.down_proj");
                assert_eq!(
                    missing,
                    "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"
                );
            }
            other => panic!("{other}"),
        }
    }
}

#[test]
fn refuses_wrong_shapes_naming_the_expected_one() {
    // q_proj's A transposed: [16, 4] instead of [4, 16]
    let dir = adapter_variant("adapter", |tensors, _| {
        let name = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight";
        let a = tensors[name].t().unwrap().contiguous().unwrap();
        tensors.insert(name.into(), a);
    });
    let (error, _) = refused::<Linear>(&dir, LoadMode::Merge);
    match &error {
        PeftError::Shape {
            path,
            expected,
            found,
            axes,
            ..
        } => {
            assert_eq!(path, "model.layers.1.self_attn.q_proj");
            assert_eq!(
                (expected.as_slice(), found.as_slice()),
                (&[4, 16][..], &[16, 4][..])
            );
            assert_eq!(*axes, "[r, in_features]");
        }
        other => panic!("{other}"),
    }
    assert!(error.to_string().contains("[4, 16]"), "{error}");
    // down_proj's B with the wrong out_features
    let dir = adapter_variant("adapter", |tensors, _| {
        let name = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight";
        tensors.insert(
            name.into(),
            Tensor::zeros((32, 4), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let (error, _) = refused::<LoraLinear>(&dir, LoadMode::Attach);
    assert!(
        matches!(&error, PeftError::Shape { expected, axes, .. } if expected == &[16, 4] && *axes == "[out_features, r]"),
        "{error}"
    );
}

#[test]
fn refuses_a_rank_the_config_does_not_give() {
    let dir = adapter_variant("adapter", |_, config| {
        config["r"] = 8.into();
    });
    let (error, _) = refused::<LoraLinear>(&dir, LoadMode::Attach);
    assert!(
        matches!(
            &error,
            PeftError::Rank {
                expected: 8,
                found: 4,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn refuses_unsupported_options() {
    for (option, value) in [
        ("use_dora", serde_json::json!(true)),
        ("bias", serde_json::json!("all")),
        ("lora_bias", serde_json::json!(true)),
        ("fan_in_fan_out", serde_json::json!(true)),
        ("layer_replication", serde_json::json!([[0, 2]])),
        ("trainable_token_indices", serde_json::json!([1, 2])),
        ("init_lora_weights", serde_json::json!("pissa")),
        ("alora_invocation_tokens", serde_json::json!([3])),
        ("peft_type", serde_json::json!("LOHA")),
    ] {
        let dir = adapter_variant("adapter", |_, config| {
            config[option] = value.clone();
        });
        for mode in [LoadMode::Attach, LoadMode::Merge] {
            let (error, _) = refused::<LoraLinear>(&dir, mode);
            assert!(
                matches!(&error, PeftError::Refused { option: found, .. } if *found == option),
                "{option}: {error}"
            );
            assert!(error.to_string().contains(option), "{error}");
        }
    }
}

#[test]
fn attaching_to_a_plain_linear_names_the_fix() {
    let (error, _) = refused::<Linear>(&fixture("adapter"), LoadMode::Attach);
    assert!(
        matches!(&error, PeftError::NotASlot { path, type_name: "Linear", slot: "LoraLinear" } if path == "model.layers.0.mlp.down_proj"),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("LoraLinear") && message.contains("LoadMode::Merge"),
        "{message}"
    );
}

#[test]
fn refuses_a_target_that_is_not_a_linear() {
    let dir = adapter_variant("adapter", |tensors, config| {
        config["target_modules"] = serde_json::json!(["q_proj", "v_proj", "down_proj", "norm"]);
        tensors.insert(
            "base_model.model.model.norm.lora_A.weight".into(),
            Tensor::zeros((4, 16), DType::F32, &Device::Cpu).unwrap(),
        );
        tensors.insert(
            "base_model.model.model.norm.lora_B.weight".into(),
            Tensor::zeros((16, 4), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    for mode in [LoadMode::Attach, LoadMode::Merge] {
        let (error, _) = refused::<LoraLinear>(&dir, mode);
        assert!(
            matches!(&error, PeftError::NotAdaptable { path, type_name: "RmsNorm", .. } if path == "model.norm"),
            "{error}"
        );
    }
}

#[test]
fn refuses_an_adapter_name_already_taken() {
    let mut model = load::<LoraLinear>("model");
    load_peft_adapter(&mut model, fixture("adapter"), LoadMode::Attach).unwrap();
    let before = snapshot(&model);
    let error = load_peft_adapter(&mut model, fixture("adapter"), LoadMode::Attach).unwrap_err();
    assert!(
        matches!(&error, PeftError::DuplicateAdapter { adapter, .. } if adapter == "default"),
        "{error}"
    );
    assert_eq!(snapshot(&model), before);
}

#[test]
fn refuses_two_tensors_for_one_half() {
    // the same A twice, once with an adapter-name infix
    let dir = adapter_variant("adapter", |tensors, _| {
        let name = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight";
        let a = tensors[name].clone();
        tensors.insert(name.replace(".weight", ".other.weight"), a);
    });
    let (error, _) = refused::<LoraLinear>(&dir, LoadMode::Attach);
    assert!(
        matches!(&error, PeftError::Conflict { path, .. } if path == "model.layers.1.self_attn.v_proj"),
        "{error}"
    );
}

#[test]
fn refuses_missing_files() {
    let dir = scratch("empty");
    let (error, _) = refused::<LoraLinear>(&dir, LoadMode::Attach);
    assert!(
        matches!(&error, PeftError::Io { file, .. } if file.ends_with("adapter_config.json")),
        "{error}"
    );
}

#[test]
fn apply_refuses_plain_layers_and_unknown_targets() {
    let config =
        |targets: &[&str]| LoraConfig::new(4, 8.0).with_target_modules(targets.iter().copied());
    let varmap = VarMap::new();

    let mut plain = load::<Linear>("model");
    let before = snapshot(&plain);
    let error = apply_lora(&mut plain, &config(&["q_proj"]), &varmap).unwrap_err();
    assert!(
        matches!(
            &error,
            PeftError::NotASlot {
                slot: "LoraLinear",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(snapshot(&plain), before);

    let mut model = load::<LoraLinear>("model");
    let before = snapshot(&model);
    let error = apply_lora(&mut model, &config(&["q_projj"]), &varmap).unwrap_err();
    assert!(matches!(&error, PeftError::Selection { .. }), "{error}");
    assert!(error.to_string().contains("q_proj"), "{error}");
    // a spec that reaches a norm
    let error =
        apply_lora(&mut model, &config(&["q_proj", "input_layernorm"]), &varmap).unwrap_err();
    assert!(
        matches!(
            &error,
            PeftError::NotAdaptable {
                type_name: "RmsNorm",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(snapshot(&model), before);
    assert!(
        varmap.all_vars().is_empty(),
        "no variable is created on error"
    );

    // a zero rank, given directly
    let targets = [moduletree::candle::LoraTarget {
        path: "model.layers.0.self_attn.q_proj".to_owned(),
        rank: 0,
        alpha: 8.0,
    }];
    let error = moduletree::candle::apply_lora_to(
        &mut model,
        &targets,
        &config(&["q_proj"]),
        &varmap,
        "default",
    )
    .unwrap_err();
    assert!(
        matches!(&error, PeftError::Settings { rank: 0, .. }),
        "{error}"
    );
    assert_eq!(snapshot(&model), before);
    // and in a config
    let mut zero = config(&["q_proj"]);
    zero.r = 0;
    let error = apply_lora(&mut model, &zero, &varmap).unwrap_err();
    assert!(matches!(&error, PeftError::Config { .. }), "{error}");

    // applying twice to one VarMap would share variables: refused
    apply_lora(&mut model, &config(&["q_proj"]), &varmap).unwrap();
    let mut other = load::<LoraLinear>("model");
    let before = snapshot(&other);
    let count = varmap.all_vars().len();
    let error = apply_lora(&mut other, &config(&["q_proj"]), &varmap).unwrap_err();
    assert!(
        matches!(&error, PeftError::VariableExists { name } if name.ends_with("q_proj.lora_A.weight")),
        "{error}"
    );
    assert_eq!(snapshot(&other), before);
    assert_eq!(varmap.all_vars().len(), count, "the VarMap is unchanged");
}

#[test]
fn save_writes_the_adapters_ranks_and_alphas_and_refuses_another_rslora() {
    let mut model = load::<LoraLinear>("model");
    load_peft_adapter(&mut model, fixture("adapter"), LoadMode::Attach).unwrap();
    let out = scratch("mismatch");
    // The config's own r and alpha are replaced by what the adapters hold.
    save_peft_adapter(&model, &out, &LoraConfig::new(2, 16.0)).unwrap();
    let written =
        LoraConfig::from_json(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!((written.r, written.lora_alpha), (4, 12.0));
    let other = scratch("mismatch-rslora");
    let error =
        save_peft_adapter(&model, &other, &LoraConfig::new(4, 12.0).rslora(true)).unwrap_err();
    assert!(
        matches!(
            &error,
            PeftError::ConfigMismatch {
                rslora: false,
                config_rslora: true,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        !other.join("adapter_config.json").exists(),
        "nothing is written"
    );
    let bare = load::<LoraLinear>("model");
    let error = save_peft_adapter(&bare, &other, &LoraConfig::new(4, 12.0)).unwrap_err();
    assert!(matches!(&error, PeftError::NothingToSave { .. }), "{error}");
}

/// Two projections, one of them shared: readable, not changeable.
#[derive(moduletree::ModuleTree)]
struct SharedPair {
    q_proj: std::sync::Arc<LoraLinear>,
    v_proj: LoraLinear,
}

#[derive(moduletree::ModuleTree)]
struct Pair {
    q_proj: LoraLinear,
    v_proj: LoraLinear,
}

fn projection(seed: f32) -> LoraLinear {
    let values: Vec<f32> = (0..32)
        .map(|i| (i as f32).mul_add(0.3, seed).sin())
        .collect();
    let weight = Tensor::from_vec(values, (4, 8), &Device::Cpu).unwrap();
    LoraLinear::from(Linear::new(weight, None))
}

#[test]
fn refuses_layers_behind_an_arc_as_shared_before_changing_any() {
    let config = LoraConfig::new(2, 4.0).with_target_modules(["q_proj", "v_proj"]);
    let mut shared = SharedPair {
        q_proj: std::sync::Arc::new(projection(0.0)),
        v_proj: projection(1.0),
    };
    let varmap = VarMap::new();
    let error = apply_lora(&mut shared, &config, &varmap).unwrap_err();
    assert!(
        matches!(&error, PeftError::ReadOnly { path } if path == "q_proj"),
        "{error}"
    );
    assert_eq!(shared.v_proj.adapters().count(), 0);
    assert!(varmap.all_vars().is_empty());

    let mut plain = Pair {
        q_proj: projection(0.0),
        v_proj: projection(1.0),
    };
    apply_lora(&mut plain, &config, &VarMap::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_peft_adapter(&plain, dir.path(), &config).unwrap();
    for mode in [LoadMode::Attach, LoadMode::Merge] {
        let before = snapshot(&shared);
        let error = load_peft_adapter(&mut shared, dir.path(), mode).unwrap_err();
        assert!(
            matches!(&error, PeftError::ReadOnly { path } if path == "q_proj"),
            "{mode:?}: {error}"
        );
        assert_eq!(snapshot(&shared), before);
    }
}
