//! Loading a PEFT adapter into a candle model: a 32-layer transformer-shaped model (hidden 64,
//! 7 linears per layer, all `LoraLinear` slots: 224 linears) and an r = 8 adapter on every
//! linear, attached and merged. The same shapes as the `burn_lora` bench, so the two
//! frameworks' loads can be read side by side.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use moduletree::ModuleTree;
use moduletree::candle::{LoadMode, LoraLinear, load_peft_adapter};

const HIDDEN: usize = 64;
const FFN: usize = 128;
const LAYERS: usize = 32;
const RANK: usize = 8;

#[derive(ModuleTree, Clone)]
struct Attention {
    q_proj: LoraLinear,
    k_proj: LoraLinear,
    v_proj: LoraLinear,
    o_proj: LoraLinear,
}

#[derive(ModuleTree, Clone)]
struct Mlp {
    gate_proj: LoraLinear,
    up_proj: LoraLinear,
    down_proj: LoraLinear,
}

#[derive(ModuleTree, Clone)]
struct Layer {
    self_attn: Attention,
    mlp: Mlp,
}

#[derive(ModuleTree, Clone)]
struct Model {
    layers: Vec<Layer>,
}

/// Every linear: its path and `[out, in]`.
fn shapes() -> Vec<(String, (usize, usize))> {
    let mut shapes = Vec::new();
    for index in 0..LAYERS {
        for (name, shape) in [
            ("self_attn.q_proj", (HIDDEN, HIDDEN)),
            ("self_attn.k_proj", (HIDDEN, HIDDEN)),
            ("self_attn.v_proj", (HIDDEN, HIDDEN)),
            ("self_attn.o_proj", (HIDDEN, HIDDEN)),
            ("mlp.gate_proj", (FFN, HIDDEN)),
            ("mlp.up_proj", (FFN, HIDDEN)),
            ("mlp.down_proj", (HIDDEN, FFN)),
        ] {
            shapes.push((format!("layers.{index}.{name}"), shape));
        }
    }
    shapes
}

fn model() -> Model {
    let linear = |out: usize, inp: usize| {
        let weight = Tensor::randn(0f32, 0.05, (out, inp), &Device::Cpu).unwrap();
        LoraLinear::new(candle_nn::Linear::new(weight, None))
    };
    Model {
        layers: (0..LAYERS)
            .map(|_| Layer {
                self_attn: Attention {
                    q_proj: linear(HIDDEN, HIDDEN),
                    k_proj: linear(HIDDEN, HIDDEN),
                    v_proj: linear(HIDDEN, HIDDEN),
                    o_proj: linear(HIDDEN, HIDDEN),
                },
                mlp: Mlp {
                    gate_proj: linear(FFN, HIDDEN),
                    up_proj: linear(FFN, HIDDEN),
                    down_proj: linear(HIDDEN, FFN),
                },
            })
            .collect(),
    }
}

/// Writes a PEFT adapter on every linear with plain safetensors and JSON, whatever the crate's
/// own API.
fn write_adapter(dir: &std::path::Path) {
    let mut tensors = HashMap::new();
    for (path, (out, inp)) in shapes() {
        let a = Tensor::randn(0f32, 0.05, (RANK, inp), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 0.05, (out, RANK), &Device::Cpu).unwrap();
        tensors.insert(format!("base_model.model.{path}.lora_A.weight"), a);
        tensors.insert(format!("base_model.model.{path}.lora_B.weight"), b);
    }
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
    let config = r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": "all-linear", "bias": "none", "lora_dropout": 0.0}"#;
    std::fs::write(dir.join("adapter_config.json"), config).unwrap();
}

fn bench(c: &mut Criterion) {
    let scratch = tempfile::tempdir().unwrap();
    write_adapter(scratch.path());
    let base = model();
    for (name, mode) in [("attach", LoadMode::Attach), ("merge", LoadMode::Merge)] {
        c.bench_function(
            &format!("candle load_peft_adapter {name} (224 adapters)"),
            |b| {
                b.iter_batched(
                    || base.clone(),
                    |mut model| {
                        load_peft_adapter(&mut model, scratch.path(), mode).unwrap();
                        model
                    },
                    BatchSize::SmallInput,
                );
            },
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
