//! Mixture-of-experts models as transformers 5 holds them (experts fused in `ExpertBank`s),
//! loaded from the per-expert checkpoints `save_pretrained` writes, against the logits PyTorch
//! computes (`fixtures/moe`, made by its `make.py` with transformers 5.24 and PEFT 0.21.2): the
//! base model, and PEFT adapters with `target_parameters` on the fused experts, attached and
//! merged, within 1e-4.
#![cfg(feature = "candle")]

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::Linear;
use moduletree::candle::{LoadMode, LoraLinear, load_peft_adapter};
use moduletree_candle_examples::Projection;
use moduletree_candle_examples::moe::MoeForCausalLM;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/moe")
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("logits.json")).unwrap()).unwrap()
}

fn table(value: &serde_json::Value) -> Vec<Vec<f32>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn tokens() -> Vec<u32> {
    reference()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| u32::try_from(t.as_u64().unwrap()).unwrap())
        .collect()
}

fn max_diff(left: &[Vec<f32>], right: &[Vec<f32>]) -> f32 {
    assert_eq!(left.len(), right.len());
    left.iter()
        .zip(right)
        .flat_map(|(l, r)| l.iter().zip(r).map(|(a, b)| (a - b).abs()))
        .fold(0.0, f32::max)
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
