//! Mixture-of-experts models as transformers 5 holds them (experts fused in `ExpertBank`s),
//! loaded from the per-expert checkpoints `save_pretrained` writes, against the logits PyTorch
//! computes (`fixtures/moe`, made by its `make.py` with transformers 5.24 and PEFT 0.21.2): the
//! base model, and PEFT adapters with `target_parameters` on the fused experts, attached and
//! merged, within 1e-4.
#![cfg(feature = "candle")]

mod candle_common;
mod fixture_common;

use std::path::{Path, PathBuf};

use candle_common::{json_tokens, listed_shapes, max_diff, read_json, saved_shapes, table};
use candle_core::Device;
use candle_nn::Linear;
use moduletree::candle::{LoadMode, LoraLinear, load_peft_adapter};
use moduletree_candle_examples::Projection;
use moduletree_candle_examples::moe::MoeForCausalLM;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/moe")
}

fn reference() -> serde_json::Value {
    read_json(&fixtures().join("logits.json"))
}

fn tokens() -> Vec<u32> {
    json_tokens(&reference())
}

fn logits<P: Projection>(family: &str, adapter: Option<(&str, LoadMode)>) -> Vec<Vec<f32>> {
    let mut model = MoeForCausalLM::<P>::load(&fixtures().join(family).join("model"), &Device::Cpu)
        .unwrap_or_else(|error| panic!("{family}: {error}"));
    if let Some((name, mode)) = adapter {
        load_peft_adapter(&mut model, fixtures().join(name), mode)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    model.forward(&tokens()).unwrap().to_vec2::<f32>().unwrap()
}

#[test]
fn base_models_match_pytorch() {
    let reference = reference();
    for family in ["mixtral", "qwen2_moe"] {
        let found = logits::<Linear>(family, None);
        let diff = max_diff(&found, &table(&reference["models"][family]["base"]));
        assert!(diff < 1e-4, "{family}: {diff}");
    }
}

#[test]
fn fused_expert_adapters_match_pytorch_attached_and_merged() {
    let reference = reference();
    for name in ["mixtral/fused", "mixtral/patterns", "qwen2_moe/fused"] {
        let family = name.split('/').next().unwrap();
        let expected = &reference["adapters"][name];
        let attached = logits::<LoraLinear>(family, Some((name, LoadMode::Attach)));
        let diff = max_diff(&attached, &table(&expected["attached"]));
        assert!(diff < 1e-4, "{name} attached: {diff}");
        let merged = logits::<Linear>(family, Some((name, LoadMode::Merge)));
        let diff = max_diff(&merged, &table(&expected["merged"]));
        assert!(diff < 1e-4, "{name} merged: {diff}");
        // The adapter changes the model.
        let base = table(&reference["models"][family]["base"]);
        assert!(max_diff(&attached, &base) > 1e-2, "{name} has an effect");
    }
}

#[test]
fn per_expert_adapters_fuse_exactly_into_the_banks() {
    // Adapters trained on transformers 4's per-expert linears load into the fused banks and
    // give the per-expert computation's logits (PyTorch with transformers 4), rsLoRA included,
    // where PEFT 0.21's own conversion is off by √2 in the rsLoRA scale. Qwen2-MoE's carries LoRA
    // on the router too (merged: the router is a plain linear), and the bare-name one also
    // hits the shared expert, which stays a shared expert's LoRA.
    let reference = reference();
    for (name, modes) in [
        (
            "mixtral/per_expert_v4",
            &[LoadMode::Attach, LoadMode::Merge][..],
        ),
        (
            "mixtral/per_expert_v4_rslora",
            &[LoadMode::Attach, LoadMode::Merge][..],
        ),
        (
            "qwen2_moe/per_expert_v4",
            &[LoadMode::Attach, LoadMode::Merge][..],
        ),
        (
            "qwen2_moe/per_expert_v4_bare",
            &[LoadMode::Attach, LoadMode::Merge][..],
        ),
    ] {
        let family = name.split('/').next().unwrap();
        let expected = &reference["adapters"][name];
        for &mode in modes {
            let found = match mode {
                LoadMode::Attach => logits::<LoraLinear>(family, Some((name, mode))),
                LoadMode::Merge => logits::<Linear>(family, Some((name, mode))),
            };
            let truth = match mode {
                LoadMode::Attach => &expected["attached_transformers4"],
                LoadMode::Merge => &expected["merged_transformers4"],
            };
            let diff = max_diff(&found, &table(truth));
            assert!(diff < 1e-5, "{name} {mode:?}: {diff}");
        }
    }
    // What PEFT 0.21 itself does with the rsLoRA one on transformers 5 is √2 off.
    let peft = &reference["adapters"]["mixtral/per_expert_v4_rslora"];
    assert!(
        max_diff(
            &table(&peft["attached"]),
            &table(&peft["attached_transformers4"])
        ) > 0.1
    );
}

#[test]
fn saved_fused_adapters_are_pefts_keys_shapes_and_config() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("peft_expected.json")).unwrap(),
    )
    .unwrap();
    for name in ["mixtral/fused", "mixtral/patterns", "qwen2_moe/fused"] {
        let family = name.split('/').next().unwrap();
        let mut model = MoeForCausalLM::<LoraLinear>::load(
            &fixtures().join(family).join("model"),
            &Device::Cpu,
        )
        .unwrap();
        let dir = fixtures().join(name);
        load_peft_adapter(&mut model, &dir, LoadMode::Attach).unwrap();
        let config = moduletree::peft::LoraConfig::from_json(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let out = tempfile::tempdir().unwrap();
        moduletree::candle::save_peft_adapter(&model, out.path(), &config).unwrap();
        assert_eq!(
            saved_shapes(out.path()),
            listed_shapes(&expected["adapters"][name]["tensors"]),
            "{name}"
        );
        // The saved file gives the same logits again.
        let mut again =
            MoeForCausalLM::<Linear>::load(&fixtures().join(family).join("model"), &Device::Cpu)
                .unwrap();
        load_peft_adapter(&mut again, out.path(), LoadMode::Merge).unwrap();
        let logits = again.forward(&tokens()).unwrap().to_vec2::<f32>().unwrap();
        let diff = max_diff(&logits, &table(&reference()["adapters"][name]["attached"]));
        assert!(diff < 1e-4, "{name} saved: {diff}");
    }
}

#[test]
fn deepseek_v3_matches_pytorch_base_attached_and_merged() {
    use moduletree_candle_examples::deepseek::DeepseekV3ForCausalLM;
    let reference = reference();
    let dir = fixtures().join("deepseek_v3");
    let load = |adapter: Option<LoadMode>| -> Vec<Vec<f32>> {
        match adapter {
            None | Some(LoadMode::Merge) => {
                let mut model =
                    DeepseekV3ForCausalLM::<Linear>::load(&dir.join("model"), &Device::Cpu)
                        .unwrap();
                if adapter.is_some() {
                    load_peft_adapter(&mut model, dir.join("fused"), LoadMode::Merge).unwrap();
                }
                model.forward(&tokens()).unwrap().to_vec2::<f32>().unwrap()
            }
            Some(LoadMode::Attach) => {
                let mut model =
                    DeepseekV3ForCausalLM::<LoraLinear>::load(&dir.join("model"), &Device::Cpu)
                        .unwrap();
                load_peft_adapter(&mut model, dir.join("fused"), LoadMode::Attach).unwrap();
                model.forward(&tokens()).unwrap().to_vec2::<f32>().unwrap()
            }
        }
    };
    let base = load(None);
    let diff = max_diff(&base, &table(&reference["models"]["deepseek_v3"]["base"]));
    assert!(diff < 1e-4, "base: {diff}");
    let expected = &reference["adapters"]["deepseek_v3/fused"];
    let diff = max_diff(&load(Some(LoadMode::Attach)), &table(&expected["attached"]));
    assert!(diff < 1e-4, "attached: {diff}");
    let diff = max_diff(&load(Some(LoadMode::Merge)), &table(&expected["merged"]));
    assert!(diff < 1e-4, "merged: {diff}");
    // Typed: the shared expert and the dense layer are no routed experts.
    let model = DeepseekV3ForCausalLM::<Linear>::load(&dir.join("model"), &Device::Cpu).unwrap();
    let spec = |entry: &str| {
        moduletree::target::TargetSpec::parse([entry])
            .unwrap()
            .resolve(&model)
            .unwrap()
            .paths()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        spec("all-experts"),
        [
            "model.layers.1.mlp.experts.gate_up_proj",
            "model.layers.1.mlp.experts.down_proj"
        ]
    );
    assert_eq!(
        spec("all-shared-experts"),
        [
            "model.layers.1.mlp.shared_experts.gate_proj",
            "model.layers.1.mlp.shared_experts.up_proj",
            "model.layers.1.mlp.shared_experts.down_proj",
        ]
    );
}

#[test]
fn fused_expert_adapters_train_and_round_trip() {
    // apply_lora on attention and the banks, a few optimizer steps lower the loss, and what is
    // saved loads back to the same logits, attached and merged.
    use candle_nn::{Optimizer, VarMap};
    let dir = fixtures().join("mixtral/model");
    let mut model = MoeForCausalLM::<LoraLinear>::load(&dir, &Device::Cpu).unwrap();
    let mut lora = moduletree::peft::LoraConfig::new(4, 8.0).with_target_modules(["q_proj"]);
    lora.target_parameters = Some(vec![
        "experts.gate_up_proj".into(),
        "experts.down_proj".into(),
    ]);
    let varmap = VarMap::new();
    let adapted = moduletree::candle::apply_lora(&mut model, &lora, &varmap).unwrap();
    assert_eq!(adapted.len(), 6);
    assert_eq!(varmap.all_vars().len(), 12);
    for var in moduletree::candle::lora_factor_vars(&varmap).b {
        var.set(&(var.as_tensor().ones_like().unwrap() * 0.01).unwrap())
            .unwrap();
    }
    let tokens: Vec<u32> = (0..12).map(|i| (i * 5 + 1) % 32).collect();
    let loss = |model: &MoeForCausalLM<LoraLinear>| {
        moduletree_candle_examples::llama::next_token_loss(&tokens, |inputs| model.forward(inputs))
            .unwrap()
    };
    let mut optimizer = candle_nn::AdamW::new_lr(varmap.all_vars(), 0.02).unwrap();
    let first = loss(&model).to_scalar::<f32>().unwrap();
    for _ in 0..4 {
        optimizer.backward_step(&loss(&model)).unwrap();
    }
    let last = loss(&model).to_scalar::<f32>().unwrap();
    assert!(last < first, "{first} -> {last}");
    let trained = model.forward(&tokens).unwrap().to_vec2::<f32>().unwrap();
    let out = tempfile::tempdir().unwrap();
    moduletree::candle::save_peft_adapter(&model, out.path(), &lora).unwrap();
    let mut attached = MoeForCausalLM::<LoraLinear>::load(&dir, &Device::Cpu).unwrap();
    load_peft_adapter(&mut attached, out.path(), LoadMode::Attach).unwrap();
    assert!(
        max_diff(
            &attached.forward(&tokens).unwrap().to_vec2::<f32>().unwrap(),
            &trained
        ) < 1e-6
    );
    let mut merged = MoeForCausalLM::<Linear>::load(&dir, &Device::Cpu).unwrap();
    load_peft_adapter(&mut merged, out.path(), LoadMode::Merge).unwrap();
    assert!(
        max_diff(
            &merged.forward(&tokens).unwrap().to_vec2::<f32>().unwrap(),
            &trained
        ) < 1e-4
    );
}

#[test]
fn fused_adapters_save_back_to_per_expert_keys_exactly() {
    // A target_parameters adapter saved under transformers 4's per-expert names (Mixtral's
    // block_sparse_moe.experts.K.w1/w3/w2) loads back, fused again, to the same logits.
    let dir = fixtures().join("mixtral");
    let mut model = MoeForCausalLM::<LoraLinear>::load(&dir.join("model"), &Device::Cpu).unwrap();
    load_peft_adapter(&mut model, dir.join("fused"), LoadMode::Attach).unwrap();
    let attached = model.forward(&tokens()).unwrap().to_vec2::<f32>().unwrap();
    let config = moduletree::peft::LoraConfig::from_json(
        &std::fs::read_to_string(dir.join("fused/adapter_config.json")).unwrap(),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    moduletree::candle::save_peft_adapter_per_expert(
        &mut model,
        out.path(),
        &config,
        moduletree::peft::PerExpertNames::MIXTRAL,
    )
    .unwrap();
    let written = moduletree::peft::Adapter::read(out.path()).unwrap();
    let names: Vec<&String> = written.tensors().keys().collect();
    assert!(
        names.contains(
            &&"base_model.model.model.layers.0.block_sparse_moe.experts.3.w1.lora_A.weight"
                .to_owned()
        ),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .all(|name| !name.contains("experts.lora_") && !name.contains("base_layer"))
    );
    assert!(written.config().target_parameters.is_none());
    let mut again = MoeForCausalLM::<Linear>::load(&dir.join("model"), &Device::Cpu).unwrap();
    load_peft_adapter(&mut again, out.path(), LoadMode::Merge).unwrap();
    let diff = max_diff(
        &again.forward(&tokens()).unwrap().to_vec2::<f32>().unwrap(),
        &attached,
    );
    assert!(diff < 1e-5, "{diff}");
}
