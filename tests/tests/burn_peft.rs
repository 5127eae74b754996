//! PEFT adapter files against burn: the adapter PyTorch made for `fixtures/burn_mlp` gives, in
//! burn, PyTorch's outputs within 1e-4, live and merged; bad files are refused by name and leave
//! the model unchanged; saved adapters are PEFT's tensors and load back.
#![cfg(feature = "burn")]

mod burn_common;
mod fixture_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_common::snapshot;
use moduletree::ModuleTree;
use moduletree::burn::{
    LoadMode, LoraConfig, PeftError, load_adapter, load_peft_adapter, save_peft_adapter,
};
use moduletree::peft::Adapter;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

const TOLERANCE: f32 = 1e-4;

#[derive(Module, ModuleTree, Debug)]
struct Block {
    attn_proj: Linear,
    fc1: Linear,
    fc2: Linear,
}

#[derive(Module, ModuleTree, Debug)]
struct TinyMlp {
    embed: Embedding,
    blocks: Vec<Block>,
    head: Linear,
}

impl TinyMlp {
    fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let mut x = self.embed.forward(tokens);
        for block in &self.blocks {
            x = x.clone() + block.attn_proj.forward(x);
            x = x.clone() + block.fc2.forward(relu(block.fc1.forward(x)));
        }
        self.head.forward(x)
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/burn_mlp")
}

fn adapter_dir() -> PathBuf {
    fixture().join("adapter")
}

/// A fresh directory under the system's temp dir, removed when the guard is dropped.
fn temp_dir(name: &str) -> fixture_common::Scratch {
    fixture_common::scratch(name)
}

fn f32s(view: &TensorView<'_>) -> Vec<f32> {
    assert_eq!(view.dtype(), Dtype::F32);
    view.data()
        .chunks_exact(4)
        .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        .collect()
}

/// The fixture model in burn: PyTorch's `[out, in]` weights transposed to burn's `[in, out]`.
fn load_model(device: &Device) -> TinyMlp {
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let matrix = |key: &str| {
        let view = tensors.tensor(key).unwrap();
        let shape = [view.shape()[0], view.shape()[1]];
        Tensor::<2>::from_data(TensorData::new(f32s(&view), shape), device)
    };
    let vector = |key: &str| {
        let view = tensors.tensor(key).unwrap();
        Tensor::<1>::from_data(TensorData::new(f32s(&view), [view.shape()[0]]), device)
    };
    let linear = |name: &str, bias: bool| Linear {
        weight: Param::from_tensor(matrix(&format!("{name}.weight")).transpose()),
        bias: bias.then(|| Param::from_tensor(vector(&format!("{name}.bias")))),
    };
    TinyMlp {
        embed: Embedding {
            weight: Param::from_tensor(matrix("embed.weight")),
        },
        blocks: (0..2)
            .map(|index| Block {
                attn_proj: linear(&format!("blocks.{index}.attn_proj"), true),
                fc1: linear(&format!("blocks.{index}.fc1"), true),
                fc2: linear(&format!("blocks.{index}.fc2"), true),
            })
            .collect(),
        head: linear("head", false),
    }
}

fn outputs() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("outputs.json")).unwrap()).unwrap()
}

fn run(model: &TinyMlp, device: &Device) -> Vec<Vec<f32>> {
    let tokens: Vec<i64> = outputs()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| token.as_i64().unwrap())
        .collect();
    let length = tokens.len();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(tokens, [1, length]), device);
    let output = model.forward(tokens);
    let [_, rows, columns] = output.dims();
    let values = output.into_data().try_to_vec::<f32>().unwrap();
    (0..rows)
        .map(|row| values[row * columns..(row + 1) * columns].to_vec())
        .collect()
}

fn assert_close(found: &[Vec<f32>], expected_key: &str) {
    let expected = &outputs()[expected_key];
    let mut worst = 0f32;
    for (row, values) in found.iter().enumerate() {
        for (column, value) in values.iter().enumerate() {
            #[allow(clippy::cast_possible_truncation)]
            let expected = expected[row][column].as_f64().unwrap() as f32;
            worst = worst.max((value - expected).abs());
        }
    }
    assert!(
        worst < TOLERANCE,
        "{expected_key}: max |burn - torch| = {worst}"
    );
}

fn adapted_paths<T: ModuleTree>(model: &T) -> Vec<String> {
    let mut paths = Vec::new();
    moduletree::walk(model, |node| {
        if let Some(linear) = node.downcast_ref::<Linear>()
            && linear.weight.adapter().is_some()
        {
            paths.push(node.path().to_string());
        }
    });
    paths
}

const TARGETS: [&str; 4] = [
    "blocks.0.attn_proj",
    "blocks.0.fc2",
    "blocks.1.attn_proj",
    "blocks.1.fc2",
];

#[test]
fn base_model_matches_pytorch() {
    let device = Device::default();
    assert_close(&run(&load_model(&device), &device), "base");
}

#[test]
fn live_adapter_matches_pytorch() {
    let device = Device::default();
    let mut model = load_model(&device);
    let loaded = load_peft_adapter(&mut model, adapter_dir(), LoadMode::Attach).unwrap();
    let paths: Vec<&str> = loaded.iter().map(|layer| layer.path.as_str()).collect();
    assert_eq!(paths, TARGETS);
    assert!(
        loaded
            .iter()
            .all(|layer| layer.rank == 2 && (layer.scale - 2.0).abs() < 1e-12)
    );
    assert_eq!(adapted_paths(&model), TARGETS);
    assert_close(&run(&model, &device), "lora");
}

#[test]
fn merged_adapter_matches_pytorch() {
    let device = Device::default();
    let mut model = load_model(&device);
    load_peft_adapter(&mut model, adapter_dir(), LoadMode::Merge).unwrap();
    assert!(adapted_paths(&model).is_empty());
    assert_close(&run(&model, &device), "merged");
    assert_close(&run(&model, &device), "lora");
}

#[test]
fn live_then_materialized_matches_merged() {
    let device = Device::default();
    let mut model = load_model(&device);
    load_peft_adapter(&mut model, adapter_dir(), LoadMode::Attach).unwrap();
    let model = model.materialize();
    assert!(adapted_paths(&model).is_empty());
    assert_close(&run(&model, &device), "merged");
}

/// The fixture's tensors, keyed by name, for building broken variants.
fn fixture_tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(adapter_dir().join("adapter_model.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    tensors
        .tensors()
        .into_iter()
        .map(|(key, view)| (key, (view.shape().to_vec(), f32s(&view))))
        .collect()
}

/// Writes an adapter directory with the fixture's config and these tensors.
fn write_adapter(
    name: &str,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> fixture_common::Scratch {
    let config = std::fs::read_to_string(adapter_dir().join("adapter_config.json")).unwrap();
    write_adapter_with(name, &serde_json::from_str(&config).unwrap(), tensors)
}

/// Writes an adapter directory with this config and these tensors.
fn write_adapter_with(
    name: &str,
    config: &serde_json::Value,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> fixture_common::Scratch {
    let dir = temp_dir(name);
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(key, (shape, values))| {
            let bytes = values
                .iter()
                .flat_map(|value| value.to_le_bytes())
                .collect();
            (key.clone(), shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(key, shape, bytes)| {
            (
                key.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("adapter_model.safetensors")).unwrap();
    dir
}

const PREFIX: &str = "base_model.model.";

/// The fixture's tensors with a linear's factor pair for `module` added, every value `value`.
fn fixture_with_pair(
    module: &str,
    a: [usize; 2],
    b: [usize; 2],
    value: f32,
) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut tensors = fixture_tensors();
    for (suffix, [rows, columns]) in [("lora_A", a), ("lora_B", b)] {
        tensors.insert(
            format!("{PREFIX}{module}.{suffix}.weight"),
            (vec![rows, columns], vec![value; rows * columns]),
        );
    }
    tensors
}

/// Loads a broken adapter, checks the error, and checks that the model did not change.
fn refused(name: &str, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> PeftError {
    let device = Device::default();
    let dir = write_adapter(name, tensors);
    for mode in [LoadMode::Attach, LoadMode::Merge] {
        let mut model = load_model(&device);
        let before = snapshot(&model);
        let error = load_peft_adapter(&mut model, &dir, mode).unwrap_err();
        assert_eq!(snapshot(&model), before, "{name}: the model changed");
        assert!(
            adapted_paths(&model).is_empty(),
            "{name}: an adapter was attached"
        );
        if mode == LoadMode::Merge {
            std::fs::remove_dir_all(&dir).unwrap();
            return error;
        }
    }
    unreachable!()
}

#[test]
fn unchanged_fixture_loads_from_a_copy() {
    // The copy the refusal tests start from is itself accepted.
    let device = Device::default();
    let dir = write_adapter("copy", &fixture_tensors());
    let mut model = load_model(&device);
    load_peft_adapter(&mut model, &dir, LoadMode::Attach).unwrap();
    assert_close(&run(&model, &device), "lora");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refuses_a_targeted_layer_without_tensors() {
    let mut tensors = fixture_tensors();
    tensors.retain(|key, _| !key.contains("blocks.1.fc2."));
    let error = refused("missing", &tensors);
    assert!(
        matches!(&error, PeftError::Missing { path } if path == "blocks.1.fc2"),
        "{error}"
    );
}

#[test]
fn refuses_an_unpaired_factor() {
    let mut tensors = fixture_tensors();
    tensors.remove(&format!("{PREFIX}blocks.0.attn_proj.lora_B.weight"));
    let error = refused("unpaired", &tensors);
    match &error {
        PeftError::Unpaired {
            path,
            present,
            missing,
        } => {
            assert_eq!(path, "blocks.0.attn_proj");
            assert_eq!(
                present,
                &format!("{PREFIX}blocks.0.attn_proj.lora_A.weight")
            );
            assert_eq!(
                missing,
                &format!("{PREFIX}blocks.0.attn_proj.lora_B.weight")
            );
        }
        other => panic!("expected Unpaired, got {other}"),
    }
}

#[test]
fn refuses_a_mis_shaped_factor() {
    let mut tensors = fixture_tensors();
    let key = format!("{PREFIX}blocks.0.fc2.lora_A.weight");
    let entry = tensors.get_mut(&key).unwrap();
    assert_eq!(entry.0, [2, 16]);
    entry.0 = vec![16, 2];
    let error = refused("shape", &tensors);
    match &error {
        PeftError::Shape {
            key: found_key,
            path,
            expected,
            found,
            ..
        } => {
            assert_eq!(found_key, &key);
            assert_eq!(path, "blocks.0.fc2");
            assert_eq!(expected, &[2, 16]);
            assert_eq!(found, &[16, 2]);
        }
        other => panic!("expected Shape, got {other}"),
    }
    assert_eq!(
        error.to_string(),
        format!(
            "tensor `{key}` has shape [16, 2]; `blocks.0.fc2` expects [2, 16] ([r, in_features])"
        )
    );
}

#[test]
fn refuses_a_rank_other_than_the_configs() {
    let tensors = fixture_with_pair("blocks.1.attn_proj", [3, 8], [8, 3], 0.5);
    let error = refused("rank", &tensors);
    assert!(
        matches!(&error, PeftError::Rank { path, expected: 2, found: 3, .. } if path == "blocks.1.attn_proj"),
        "{error}"
    );
}

#[test]
fn refuses_an_unknown_tensor() {
    let mut tensors = fixture_tensors();
    let key = format!("{PREFIX}blocks.0.fc2.lora_magnitude_vector");
    tensors.insert(key.clone(), (vec![8], vec![1.0; 8]));
    let error = refused("unknown-tensor", &tensors);
    assert!(
        matches!(&error, PeftError::UnknownTensor { key: found } if *found == key),
        "{error}"
    );
}

#[test]
fn refuses_an_unknown_module() {
    let tensors = fixture_with_pair("blocks.0.fc3", [2, 8], [8, 2], 0.0);
    let error = refused("unknown-module", &tensors);
    assert!(
        matches!(&error, PeftError::NoSuchModule { path, .. } if path == "blocks.0.fc3"),
        "{error}"
    );
}

#[test]
fn refuses_a_layer_the_config_does_not_target() {
    let tensors = fixture_with_pair("blocks.0.fc1", [2, 8], [16, 2], 0.0);
    let error = refused("untargeted", &tensors);
    assert!(
        matches!(&error, PeftError::NotSelected { path, option: "target_modules", .. } if path == "blocks.0.fc1"),
        "{error}"
    );
}

#[test]
fn refuses_a_module_that_is_neither_linear_nor_embedding() {
    let tensors = fixture_with_pair("blocks.0", [2, 8], [8, 2], 0.0);
    let error = refused("not-linear", &tensors);
    assert!(
        matches!(&error, PeftError::NotAdaptable { path, type_name, .. } if path == "blocks.0" && *type_name == "Block"),
        "{error}"
    );
}

#[test]
fn refuses_linear_factor_names_on_an_embedding() {
    let tensors = fixture_with_pair("embed", [2, 16], [8, 2], 0.0);
    // Untargeted, the tensors are refused by the selection first.
    let error = refused("wrong-naming", &tensors);
    assert!(
        matches!(&error, PeftError::NotSelected { path, option: "target_modules", .. } if path == "embed"),
        "{error}"
    );
    // Targeted, their names are a linear's while `embed` is an embedding.
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter_dir().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    config["target_modules"] = serde_json::json!(["attn_proj", "fc2", "embed"]);
    let dir = write_adapter_with("wrong-naming-targeted", &config, &tensors);
    let mut model = load_model(&Device::default());
    let before = snapshot(&model);
    let error = load_peft_adapter(&mut model, &dir, LoadMode::Attach).unwrap_err();
    assert_eq!(snapshot(&model), before);
    assert!(
        matches!(&error, PeftError::NotAdaptable { path, type_name, .. } if path == "embed" && *type_name == "Embedding"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refuses_a_factor_given_twice() {
    let mut tensors = fixture_tensors();
    let key = format!("{PREFIX}blocks.0.fc2.lora_A.weight");
    let value = tensors[&key].clone();
    tensors.insert("blocks.0.fc2.lora_A.weight".to_owned(), value);
    let error = refused("twice", &tensors);
    assert!(
        matches!(&error, PeftError::Conflict { path, .. } if path == "blocks.0.fc2"),
        "{error}"
    );
}

#[test]
fn refuses_a_layer_that_already_has_an_adapter() {
    let device = Device::default();
    let mut model = load_model(&device);
    load_peft_adapter(&mut model, adapter_dir(), LoadMode::Attach).unwrap();
    let before = snapshot(&model);
    let error = load_peft_adapter(&mut model, adapter_dir(), LoadMode::Merge).unwrap_err();
    assert!(
        matches!(&error, PeftError::DuplicateAdapter { path, .. } if path == "blocks.0.attn_proj"),
        "{error}"
    );
    assert_eq!(snapshot(&model), before);
}

#[test]
fn accepts_keys_without_the_peft_prefix() {
    let device = Device::default();
    let tensors: BTreeMap<_, _> = fixture_tensors()
        .into_iter()
        .map(|(key, value)| (key.strip_prefix(PREFIX).unwrap().to_owned(), value))
        .collect();
    let dir = write_adapter("no-prefix", &tensors);
    let mut model = load_model(&device);
    load_peft_adapter(&mut model, &dir, LoadMode::Attach).unwrap();
    assert_close(&run(&model, &device), "lora");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn accepts_keys_with_an_adapter_name() {
    // PEFT writes `lora_A.<adapter>.weight` for a named adapter; candle reads such files too.
    let device = Device::default();
    let tensors: BTreeMap<_, _> = fixture_tensors()
        .into_iter()
        .map(|(key, value)| {
            let named = key
                .replace(".lora_A.weight", ".lora_A.default.weight")
                .replace(".lora_B.weight", ".lora_B.default.weight");
            assert_ne!(named, key, "the fixture holds linear factors");
            (named, value)
        })
        .collect();
    let dir = write_adapter("adapter-name", &tensors);
    let mut model = load_model(&device);
    load_peft_adapter(&mut model, &dir, LoadMode::Attach).unwrap();
    assert_close(&run(&model, &device), "lora");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn saved_adapter_is_pefts_and_loads_back() {
    let device = Device::default();
    let mut model = load_model(&device);
    load_peft_adapter(&mut model, adapter_dir(), LoadMode::Attach).unwrap();
    let dir = temp_dir("save");
    let saved = save_peft_adapter(&model, &dir, &LoraConfig::default()).unwrap();
    assert_eq!(
        saved
            .iter()
            .map(|layer| layer.path.as_str())
            .collect::<Vec<_>>(),
        TARGETS
    );

    // The same tensors under the same keys as the file PEFT wrote.
    let written = {
        let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
        let tensors = SafeTensors::deserialize(&bytes).unwrap();
        tensors
            .tensors()
            .into_iter()
            .map(|(key, view)| (key, (view.shape().to_vec(), f32s(&view))))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(written, fixture_tensors());

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 2);
    assert_eq!(config["lora_alpha"], 4.0);
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["attn_proj", "fc2"])
    );

    let adapter = Adapter::read(&dir).unwrap();
    let mut fresh = load_model(&device);
    let loaded = load_adapter(&mut fresh, &adapter, LoadMode::Attach).unwrap();
    let paths: Vec<&str> = loaded.iter().map(|layer| layer.path.as_str()).collect();
    assert_eq!(paths, TARGETS);
    assert_close(&run(&fresh, &device), "lora");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn saving_a_model_without_adapters_is_refused() {
    let device = Device::default();
    let dir = temp_dir("empty");
    let error = save_peft_adapter(&load_model(&device), &dir, &LoraConfig::default()).unwrap_err();
    assert!(matches!(error, PeftError::NothingToSave { .. }), "{error}");
    assert!(!dir.join("adapter_config.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The fixture's layout with the attention projections shared: readable, not writable.
#[derive(ModuleTree)]
struct SharedBlock {
    attn_proj: std::sync::Arc<Linear>,
    fc1: Linear,
    fc2: Linear,
}

#[derive(ModuleTree)]
struct SharedMlp {
    embed: Embedding,
    blocks: Vec<SharedBlock>,
    head: Linear,
}

#[test]
fn refuses_layers_behind_an_arc_before_changing_any() {
    let device = Device::default();
    let model = load_model(&device);
    let mut shared = SharedMlp {
        embed: model.embed,
        blocks: model
            .blocks
            .into_iter()
            .map(|block| SharedBlock {
                attn_proj: std::sync::Arc::new(block.attn_proj),
                fc1: block.fc1,
                fc2: block.fc2,
            })
            .collect(),
        head: model.head,
    };
    let error = load_peft_adapter(&mut shared, adapter_dir(), LoadMode::Merge).unwrap_err();
    assert!(
        matches!(&error, PeftError::ReadOnly { path } if path == "blocks.0.attn_proj"),
        "{error}"
    );
    // `blocks.0.fc2` comes after the refused layer in walk order and was not merged either.
    assert!(adapted_paths(&shared).is_empty());
    let fresh = load_model(&device);
    let values = |linear: &Linear| linear.weight.val().into_data().try_to_vec::<f32>().unwrap();
    for (block, original) in shared.blocks.iter().zip(&fresh.blocks) {
        assert_eq!(values(&block.fc2), values(&original.fc2));
    }
}

#[test]
fn burn_factor_paths_map_to_the_keys_peft_wrote() {
    use moduletree::burn::{PathMap, lora_factor_to_peft_key, peft_key_to_lora_factor};

    let device = Device::default();
    let mut model = load_model(&device);
    load_peft_adapter(&mut model, adapter_dir(), LoadMode::Attach).unwrap();
    let map = PathMap::new(&model);
    let keys: Vec<String> = map
        .params()
        .iter()
        .filter_map(|param| lora_factor_to_peft_key(&param.tree))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(sorted, fixture_tensors().into_keys().collect::<Vec<_>>());
    assert!(keys.contains(&format!("{PREFIX}blocks.1.fc2.lora_B.weight")));
    for (key, param) in keys.iter().zip(
        map.params()
            .iter()
            .filter(|param| param.tree.contains(".lora.")),
    ) {
        assert_eq!(
            peft_key_to_lora_factor(key).as_deref(),
            Some(param.tree.as_str())
        );
    }
    // burn keeps a = Aᵀ and b = Bᵀ: the factor shapes are PEFT's, transposed.
    let tensors = fixture_tensors();
    for param in map
        .params()
        .iter()
        .filter(|param| param.tree.contains(".lora."))
    {
        let key = lora_factor_to_peft_key(&param.tree).unwrap();
        let shape = &tensors[&key].0;
        assert_eq!(param.shape, [shape[1], shape[0]], "{key}");
    }
}

#[test]
fn embedding_adapters_load_merge_and_save_under_pefts_names() {
    let device = Device::default();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter_dir().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    config["target_modules"] = serde_json::json!(["attn_proj", "fc2", "embed"]);
    let mut tensors = fixture_tensors();
    // PEFT's embedding factors: A is [r, num_embeddings], B is [dim, r].
    let a: Vec<f32> = (0..2 * 16)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0)
        .collect();
    let b: Vec<f32> = (0..8 * 2)
        .map(|i| ((i * 3 % 7) as f32 - 3.0) / 5.0)
        .collect();
    tensors.insert(
        format!("{PREFIX}embed.lora_embedding_A"),
        (vec![2, 16], a.clone()),
    );
    tensors.insert(
        format!("{PREFIX}embed.lora_embedding_B"),
        (vec![8, 2], b.clone()),
    );
    let dir = write_adapter_with("embedding", &config, &tensors);

    let mut merged = load_model(&device);
    let table = merged
        .embed
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    load_peft_adapter(&mut merged, &dir, LoadMode::Merge).unwrap();
    let found = merged
        .embed
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    // W[n, d] += scaling · Σ_r A[r, n] B[d, r], scaling = 4 / 2.
    for n in 0..16 {
        for d in 0..8 {
            let delta: f32 = (0..2).map(|r| a[r * 16 + n] * b[d * 2 + r]).sum();
            let expected = table[n * 8 + d] + 2.0 * delta;
            assert!(
                (found[n * 8 + d] - expected).abs() < 1e-6,
                "embed[{n}, {d}]"
            );
        }
    }

    let mut live = load_model(&device);
    load_peft_adapter(&mut live, &dir, LoadMode::Attach).unwrap();
    assert!(live.embed.weight.adapter().is_some());
    let (live_out, merged_out) = (run(&live, &device), run(&merged, &device));
    for (left, right) in live_out.iter().flatten().zip(merged_out.iter().flatten()) {
        assert!((left - right).abs() < 1e-5);
    }

    let saved_dir = temp_dir("embedding-saved");
    save_peft_adapter(&live, &saved_dir, &LoraConfig::default()).unwrap();
    let bytes = std::fs::read(saved_dir.join("adapter_model.safetensors")).unwrap();
    let saved = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        f32s(
            &saved
                .tensor(&format!("{PREFIX}embed.lora_embedding_A"))
                .unwrap()
        ),
        a
    );
    assert_eq!(
        f32s(
            &saved
                .tensor(&format!("{PREFIX}embed.lora_embedding_B"))
                .unwrap()
        ),
        b
    );
    let saved_config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(saved_dir.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        saved_config["target_modules"],
        serde_json::json!(["attn_proj", "embed", "fc2"])
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&saved_dir).unwrap();
}

#[test]
fn per_layer_ranks_and_alphas_follow_the_most_specific_pattern_key() {
    // `blocks.1.fc2` is more specific than `fc2`, whatever the order of the keys; rsLoRA scales
    // by `alpha / √r`.
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter_dir().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    config["rank_pattern"] = serde_json::json!({"blocks.1.fc2": 1, "fc2": 3});
    config["alpha_pattern"] = serde_json::json!({"attn_proj": 8.0});
    config["use_rslora"] = serde_json::json!(true);
    let mut tensors = fixture_tensors();
    for (layer, rank) in [("blocks.0.fc2", 3), ("blocks.1.fc2", 1)] {
        tensors.insert(
            format!("{PREFIX}{layer}.lora_A.weight"),
            (vec![rank, 16], vec![0.25; rank * 16]),
        );
        tensors.insert(
            format!("{PREFIX}{layer}.lora_B.weight"),
            (vec![8, rank], vec![0.25; 8 * rank]),
        );
    }
    let dir = write_adapter_with("patterns", &config, &tensors);
    let adapter = Adapter::read(&dir).unwrap();
    let mut model = load_model(&Device::default());
    let loaded = load_adapter(&mut model, &adapter, LoadMode::Attach).unwrap();
    let found: Vec<(&str, u32, f64)> = loaded
        .iter()
        .map(|layer| (layer.path.as_str(), layer.rank, layer.scale))
        .collect();
    let root2 = 2.0_f64.sqrt();
    let expected = [
        ("blocks.0.attn_proj", 2, 8.0 / root2),
        ("blocks.0.fc2", 3, 4.0 / 3.0_f64.sqrt()),
        ("blocks.1.attn_proj", 2, 8.0 / root2),
        ("blocks.1.fc2", 1, 4.0),
    ];
    assert_eq!(found.len(), expected.len());
    for ((path, rank, scale), (want_path, want_rank, want_scale)) in found.iter().zip(expected) {
        assert_eq!((*path, *rank), (want_path, want_rank));
        assert!((scale - want_scale).abs() < 1e-12, "{path}: {scale}");
        // The same rule as the spec's own.
        let (spec_rank, spec_alpha) = adapter.spec().rank_and_alpha_for(path);
        assert_eq!(spec_rank, *rank);
        assert!((spec_alpha / f64::from(spec_rank).sqrt() - scale).abs() < 1e-12);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
