//! The adapter lifecycle PEFT users expect, in candle and burn: per-layer status, parameter
//! counts that agree across frameworks, the factors as two groups (LoRA+), and, in candle,
//! disabling adapters without unloading them.
#![cfg(all(feature = "candle", feature = "burn"))]

mod peft_common;

use candle_core::{Device, Module, Tensor};
use moduletree::candle::LoraError;
use moduletree::peft::{LayerStatus, LoraConfig, ParameterCounts};
use peft_common::{CandleModel, burn_model, candle_model};

fn config() -> LoraConfig {
    LoraConfig::new(4, 8.0).with_target_modules(["q_proj", "v_proj"])
}

#[test]
fn status_counts_and_factor_groups_agree_in_both() {
    let mut candle = candle_model();
    let base_counts = moduletree::candle::parameter_counts(&candle);
    assert_eq!(base_counts.trainable, 0);
    assert_eq!(
        base_counts,
        moduletree::burn::parameter_counts(&burn_model()),
        "the same model has the same parameters in both"
    );
    let varmap = candle_nn::VarMap::new();
    let adapted = moduletree::candle::apply_lora(&mut candle, &config(), &varmap).unwrap();
    let (burn, _) = moduletree::burn::apply_lora(burn_model(), &config()).unwrap();

    let status = moduletree::candle::adapter_status(&candle);
    assert_eq!(status, moduletree::burn::adapter_status(&burn));
    let paths: Vec<&str> = status.iter().map(|layer| layer.path.as_str()).collect();
    let adapted_paths: Vec<&str> = adapted.iter().map(|layer| layer.path.as_str()).collect();
    assert_eq!(paths, adapted_paths);
    assert_eq!(
        status[0],
        LayerStatus {
            path: "layers.0.q_proj".to_owned(),
            adapters: vec!["default".to_owned()],
            active: Some("default".to_owned()),
            merged: false,
            enabled: true,
        }
    );

    // 4 layers of [8, 8] with r = 4: 4 · (4·8 + 8·4) factor elements.
    let counts = moduletree::candle::parameter_counts(&candle);
    let expected = ParameterCounts {
        trainable: 4 * (4 * 8 + 8 * 4),
        total: base_counts.total + 4 * (4 * 8 + 8 * 4),
    };
    assert_eq!(counts, expected);
    assert_eq!(moduletree::burn::parameter_counts(&burn), expected);

    let groups = moduletree::candle::lora_factor_vars(&varmap);
    assert_eq!((groups.a.len(), groups.b.len()), (4, 4));
    assert!(
        groups.a.iter().all(|var| var.dims()[0] == 4),
        "A is [r, in]"
    );
    assert!(
        groups.b.iter().all(|var| var.dims()[1] == 4),
        "B is [out, r]"
    );
    let (a, b) = moduletree::burn::lora_factor_groups(&burn);
    let adapter = burn.layers[0].q_proj.weight.adapter().unwrap();
    assert!(a.matches(&adapter.a.id, None) && !a.matches(&adapter.b.id, None));
    assert!(b.matches(&adapter.b.id, None) && !b.matches(&adapter.a.id, None));
}

/// The candle model with adapters on `config()`'s layers, their `B` set to ones so that they
/// change the output (fresh `B` is zero), and an input for it.
fn adapted_candle_model() -> (CandleModel, Tensor) {
    let mut model = candle_model();
    let varmap = candle_nn::VarMap::new();
    moduletree::candle::apply_lora(&mut model, &config(), &varmap).unwrap();
    for var in moduletree::candle::lora_factor_vars(&varmap).b {
        var.set(&var.as_tensor().ones_like().unwrap()).unwrap();
    }
    let x = Tensor::ones((1, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    (model, x)
}

#[test]
fn candle_adapters_disable_and_enable_without_unloading() {
    let (mut model, x) = adapted_candle_model();
    let run = |model: &CandleModel| {
        model.layers[0]
            .q_proj
            .forward(&x)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    };
    let base = model.layers[0]
        .q_proj
        .base()
        .forward(&x)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let adapted = run(&model);
    assert_ne!(adapted, base);

    assert_eq!(moduletree::candle::disable_adapters(&mut model).unwrap(), 4);
    assert_eq!(run(&model), base, "disabled: the base alone");
    assert!(
        moduletree::candle::adapter_status(&model)
            .iter()
            .all(|layer| !layer.enabled && layer.adapters == ["default"])
    );
    assert_eq!(moduletree::candle::enable_adapters(&mut model), 4);
    assert_eq!(run(&model), adapted, "enabled again: the same adapters");

    // Disabling with an adapter merged is refused, and changes no slot.
    model.layers[1].v_proj.merge().unwrap();
    let error = moduletree::candle::disable_adapters(&mut model).unwrap_err();
    assert!(
        matches!(&error, LoraError::Merged { path, .. } if path == "layers.1.v_proj"),
        "{error}"
    );
    assert!(
        moduletree::candle::adapter_status(&model)
            .iter()
            .all(|layer| layer.enabled)
    );
}

/// Merging and unmerging the whole model, as PEFT's `merge_adapter()` / `unmerge_adapter()`:
/// every slot with an active adapter, once; the merged base computes what the adapted model did,
/// and unmerging gives the base back.
#[test]
fn candle_adapters_merge_and_unmerge_as_a_whole() {
    let (mut model, x) = adapted_candle_model();
    let run = |model: &CandleModel| -> Vec<f32> {
        model.layers[1]
            .v_proj
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let base_weight = |model: &CandleModel| -> Vec<f32> {
        model.layers[1]
            .v_proj
            .base()
            .weight()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let adapted = run(&model);
    let base = base_weight(&model);

    // One slot merged by hand already: the call merges the other three.
    model.layers[0].q_proj.merge().unwrap();
    assert_eq!(moduletree::candle::merge_adapters(&mut model).unwrap(), 3);
    assert!(
        moduletree::candle::adapter_status(&model)
            .iter()
            .all(|layer| layer.merged)
    );
    let merged = run(&model);
    let worst = adapted
        .iter()
        .zip(&merged)
        .map(|(a, m)| (a - m).abs())
        .fold(0.0_f32, f32::max);
    assert!(worst < 1e-5, "{worst}");
    assert_ne!(base_weight(&model), base, "the base weight holds the delta");
    assert_eq!(moduletree::candle::merge_adapters(&mut model).unwrap(), 0);

    assert_eq!(moduletree::candle::unmerge_adapters(&mut model).unwrap(), 4);
    let worst = base_weight(&model)
        .iter()
        .zip(&base)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0_f32, f32::max);
    assert!(worst < 1e-6, "{worst}");
    assert!(
        moduletree::candle::adapter_status(&model)
            .iter()
            .all(|layer| !layer.merged)
    );
}
