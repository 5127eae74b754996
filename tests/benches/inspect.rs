//! Inspecting a DeepSeek-V3-shaped model without building it: the folded display of the test
//! model (61 layers, the first 3 dense, 256 routed experts); opening a sharded checkpoint with
//! DeepSeek-V3's real tensor names and BF16 shapes (62 shards, one per layer plus one for the
//! embeddings and head, about 1.3 TB of weights as sparse files that are never read) and building
//! its tree (target: under 40 ms); and inspecting DeepSeek-V3's FP8 index alone (every projection
//! with its `weight_scale_inv`, about 90,000 tensors, no shard present; target: under 100 ms).

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use moduletree::checkpoint::{Checkpoint, Dtype};
use moduletree::display::{Summary, Tree};
use moduletree_tests::models::deepseek_v3;

// The integration tests' sparse safetensors writer.
#[path = "../tests/checkpoint_common/mod.rs"]
mod checkpoint_common;

const HIDDEN: u64 = 7168;

/// DeepSeek-V3's tensors of decoder layer `layer`, with their shapes.
fn layer_tensors(layer: usize) -> Vec<(String, Vec<u64>)> {
    let prefix = format!("model.layers.{layer}");
    let mut tensors: Vec<(String, Vec<u64>)> = [
        ("self_attn.q_a_proj.weight", vec![1536, HIDDEN]),
        ("self_attn.q_a_layernorm.weight", vec![1536]),
        ("self_attn.q_b_proj.weight", vec![24576, 1536]),
        ("self_attn.kv_a_proj_with_mqa.weight", vec![576, HIDDEN]),
        ("self_attn.kv_a_layernorm.weight", vec![512]),
        ("self_attn.kv_b_proj.weight", vec![32768, 512]),
        ("self_attn.o_proj.weight", vec![HIDDEN, 16384]),
        ("input_layernorm.weight", vec![HIDDEN]),
        ("post_attention_layernorm.weight", vec![HIDDEN]),
    ]
    .into_iter()
    .map(|(name, shape)| (format!("{prefix}.{name}"), shape))
    .collect();
    let mlp = |tensors: &mut Vec<(String, Vec<u64>)>, at: String, inner: u64| {
        tensors.push((format!("{at}.gate_proj.weight"), vec![inner, HIDDEN]));
        tensors.push((format!("{at}.up_proj.weight"), vec![inner, HIDDEN]));
        tensors.push((format!("{at}.down_proj.weight"), vec![HIDDEN, inner]));
    };
    if layer < 3 {
        mlp(&mut tensors, format!("{prefix}.mlp"), 18432);
    } else {
        tensors.push((format!("{prefix}.mlp.gate.weight"), vec![256, HIDDEN]));
        tensors.push((
            format!("{prefix}.mlp.gate.e_score_correction_bias"),
            vec![256],
        ));
        for expert in 0..256 {
            mlp(&mut tensors, format!("{prefix}.mlp.experts.{expert}"), 2048);
        }
        mlp(&mut tensors, format!("{prefix}.mlp.shared_experts"), 2048);
    }
    tensors
}

/// Writes a BF16 shard's header; its data section is a hole of the right length.
fn write_shard(path: &Path, tensors: &[(String, Vec<u64>)]) {
    let specs: Vec<(&str, Dtype, &[u64])> = tensors
        .iter()
        .map(|(name, shape)| (name.as_str(), Dtype::BF16, shape.as_slice()))
        .collect();
    checkpoint_common::write(path, &specs);
}

/// Writes an index of DeepSeek-V3's FP8 tensor names (each projection's `weight` with its
/// `weight_scale_inv`), with no shard beside it, and returns it with its tensor count.
fn write_fp8_index(dir: &Path) -> (PathBuf, usize) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let mut weight_map = serde_json::Map::new();
    let mut add = |name: String, shard: usize| {
        weight_map.insert(
            name,
            format!("model-{:05}-of-000163.safetensors", shard + 1).into(),
        );
    };
    for name in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        add(name.to_owned(), 0);
    }
    for layer in 0..61 {
        for (name, shape) in layer_tensors(layer) {
            let projection = shape.len() == 2 && !name.ends_with(".gate.weight");
            if projection {
                add(name.replace(".weight", ".weight_scale_inv"), layer);
            }
            add(name, layer);
        }
    }
    let count = weight_map.len();
    let index = dir.join("model.safetensors.index.json");
    let json = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    fs::write(&index, json.to_string()).unwrap();
    (index, count)
}

/// Writes the sharded checkpoint and returns its index.
fn write_checkpoint(dir: &Path) -> PathBuf {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let mut shards: Vec<Vec<(String, Vec<u64>)>> = vec![vec![
        (
            "model.embed_tokens.weight".to_owned(),
            vec![129_280, HIDDEN],
        ),
        ("model.norm.weight".to_owned(), vec![HIDDEN]),
        ("lm_head.weight".to_owned(), vec![129_280, HIDDEN]),
    ]];
    shards.extend((0..61).map(layer_tensors));
    let count = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (position, tensors) in shards.iter().enumerate() {
        let shard = format!("model-{:05}-of-{count:05}.safetensors", position + 1);
        write_shard(&dir.join(&shard), tensors);
        for (name, _) in tensors {
            weight_map.insert(name.clone(), shard.clone().into());
        }
    }
    let index = dir.join("model.safetensors.index.json");
    let json = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    fs::write(&index, json.to_string()).unwrap();
    index
}

fn bench(c: &mut Criterion) {
    let model = deepseek_v3(61, 3, 256, false);
    let mut group = c.benchmark_group("deepseek_v3");
    group.bench_function("display", |b| {
        b.iter(|| Tree::of(black_box(&model)).to_string());
    });
    group.bench_function("summary", |b| {
        b.iter(|| Summary::of(black_box(&model)).to_string());
    });

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-inspect");
    let index = write_checkpoint(&dir);
    let checkpoint = Checkpoint::open(&index).unwrap();
    let bytes: u64 = checkpoint
        .tensors()
        .iter()
        .filter_map(|tensor| tensor.layout.as_ref())
        .map(|layout| layout.data_offsets.1 - layout.data_offsets.0)
        .sum();
    println!(
        "checkpoint: {} tensors in {} shards, {} GB of weights",
        checkpoint.tensors().len(),
        checkpoint.files().len(),
        bytes / 1_000_000_000
    );
    group.sample_size(20);
    group.bench_function("checkpoint_open", |b| {
        b.iter(|| Checkpoint::open(black_box(&index)).unwrap());
    });
    group.bench_function("checkpoint_open_and_summary", |b| {
        b.iter(|| {
            Checkpoint::open(black_box(&index))
                .unwrap()
                .summary()
                .to_string()
        });
    });
    fs::remove_dir_all(&dir).unwrap();

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-inspect-index");
    let (index, count) = write_fp8_index(&dir);
    let checkpoint = Checkpoint::open(&index).unwrap();
    assert_eq!(checkpoint.tensors().len(), count);
    println!(
        "index only: {count} tensors in {} absent shards",
        checkpoint.shards().len()
    );
    group.bench_function("index_only_open", |b| {
        b.iter(|| Checkpoint::open(black_box(&index)).unwrap());
    });
    group.bench_function("index_only_open_and_summary", |b| {
        b.iter(|| {
            Checkpoint::open(black_box(&index))
                .unwrap()
                .summary()
                .to_string()
        });
    });
    group.finish();
    fs::remove_dir_all(&dir).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
