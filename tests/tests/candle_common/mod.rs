//! Helpers shared by the `candle_*` tests: the `llama_tiny` fixture, PyTorch's logits, a
//! snapshot of every weight and adapter of a model, and scratch adapter directories.

#![allow(
    dead_code,
    reason = "each test file uses a different subset of the helpers"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use crate::fixture_common::{Scratch, scratch};

use candle_core::{Device, Tensor};
use candle_nn::{Embedding, Linear};
use moduletree::ModuleTree;
use moduletree::candle::{LoraEmbedding, LoraLinear};
use moduletree_candle_examples::Projection;
use moduletree_candle_examples::llama::LlamaForCausalLM;

/// The fixture directory.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/llama_tiny")
        .join(name)
}

/// PyTorch's logits and tokens from `logits.json`.
pub struct Reference {
    pub tokens: Vec<u32>,
    pub logits: HashMap<String, Vec<Vec<f32>>>,
}

pub fn reference() -> Reference {
    let value = read_json(&fixture("logits.json"));
    let tokens = json_tokens(&value);
    let mut logits = HashMap::new();
    for key in ["base", "lora", "rslora", "tied_base"] {
        logits.insert(key.to_owned(), table(&value[key]));
    }
    Reference { tokens, logits }
}

/// A JSON file a fixture's `make.py` wrote.
pub fn read_json(file: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", file.display()))
}

/// A `[rows][columns]` table of logits.
pub fn table(value: &serde_json::Value) -> Vec<Vec<f32>> {
    serde_json::from_value(value.clone()).unwrap()
}

/// The tensor names and shapes of a saved adapter directory, sorted.
pub fn saved_shapes(dir: &Path) -> Vec<(String, Vec<usize>)> {
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let saved = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut found: Vec<(String, Vec<usize>)> = saved
        .tensors()
        .into_iter()
        .map(|(key, view)| (key, view.shape().to_vec()))
        .collect();
    found.sort();
    found
}

/// The tensor names and shapes a fixture lists (`{"key": {"shape": [...]}, ...}`), sorted.
pub fn listed_shapes(tensors: &serde_json::Value) -> Vec<(String, Vec<usize>)> {
    let mut listed: Vec<(String, Vec<usize>)> = tensors
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, info)| {
            (
                key.clone(),
                serde_json::from_value(info["shape"].clone()).unwrap(),
            )
        })
        .collect();
    listed.sort();
    listed
}

/// The `tokens` list of a `logits.json`.
pub fn json_tokens(value: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(value["tokens"].clone()).unwrap()
}

pub fn load<P: Projection>(dir: &str) -> LlamaForCausalLM<P> {
    LlamaForCausalLM::<P>::load(&fixture(dir), &Device::Cpu).unwrap()
}

pub fn logits<P: Projection>(model: &LlamaForCausalLM<P>, tokens: &[u32]) -> Vec<Vec<f32>> {
    model.forward(tokens).unwrap().to_vec2::<f32>().unwrap()
}

/// The largest absolute difference between two logit tables of the same shape.
pub fn max_diff(left: &[Vec<f32>], right: &[Vec<f32>]) -> f32 {
    assert_eq!(left.len(), right.len(), "row count");
    left.iter()
        .zip(right)
        .flat_map(|(l, r)| {
            assert_eq!(l.len(), r.len(), "row width");
            l.iter().zip(r).map(|(a, b)| (a - b).abs())
        })
        .fold(0.0, f32::max)
}

pub fn assert_close(left: &[Vec<f32>], right: &[Vec<f32>], tolerance: f32, what: &str) {
    let diff = max_diff(left, right);
    assert!(
        diff <= tolerance,
        "{what}: max |diff| = {diff} > {tolerance}"
    );
}

fn values(tensor: &Tensor) -> Vec<f32> {
    tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Every weight of every leaf layer, every adapter tensor and every slot's state, by path:
/// two snapshots are equal exactly when nothing observable changed.
pub fn snapshot<M: ModuleTree + ?Sized>(model: &M) -> Vec<(String, Vec<f32>)> {
    let mut entries = Vec::new();
    moduletree::walk(model, |node| {
        let path = node.path().to_string();
        if let Some(slot) = node.downcast_ref::<LoraLinear>() {
            entries.push((format!("{path} base"), values(slot.base().weight())));
            let state = format!(
                "{path} active={:?} merged={} expert={}",
                slot.active_adapter().map(|(name, _)| name),
                slot.is_merged(),
                slot.is_expert()
            );
            entries.push((state, Vec::new()));
            for (name, adapter) in slot.adapters() {
                entries.push((format!("{path} {name} A"), values(adapter.a())));
                entries.push((format!("{path} {name} B"), values(adapter.b())));
            }
        } else if let Some(slot) = node.downcast_ref::<LoraEmbedding>() {
            entries.push((format!("{path} base"), values(slot.base().embeddings())));
            let state = format!(
                "{path} active={:?} merged={}",
                slot.active_adapter().map(|(name, _)| name),
                slot.is_merged()
            );
            entries.push((state, Vec::new()));
            for (name, adapter) in slot.adapters() {
                entries.push((format!("{path} {name} A"), values(adapter.a())));
                entries.push((format!("{path} {name} B"), values(adapter.b())));
            }
        } else if let Some(linear) = node.downcast_ref::<Linear>() {
            entries.push((format!("{path} weight"), values(linear.weight())));
        } else if let Some(embedding) = node.downcast_ref::<Embedding>() {
            entries.push((format!("{path} table"), values(embedding.embeddings())));
        }
    });
    entries
}

/// A copy of the fixture adapter `base` whose tensors and config `edit` changed.
pub fn adapter_variant(
    base: &str,
    edit: impl FnOnce(&mut HashMap<String, Tensor>, &mut serde_json::Value),
) -> Scratch {
    let source = fixture(base);
    let mut tensors =
        candle_core::safetensors::load(source.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("adapter_config.json")).unwrap())
            .unwrap();
    edit(&mut tensors, &mut config);
    let dir = scratch(base);
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    dir
}
