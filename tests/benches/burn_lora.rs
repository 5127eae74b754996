//! The burn integration on a 32-layer transformer-shaped burn model (hidden 64, 7 linears per
//! layer: 224 linears): selecting `all-linear` as a burn `ParamGroup`, attaching burn's LoRA
//! with it, and writing and reading the adapters as PEFT files (live load).

use std::hint::black_box;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use moduletree::ModuleTree;
use moduletree::burn::{LoadMode, LoraConfig, LoraSelection, load_peft_adapter, save_peft_adapter};
use moduletree::target::TargetSpec;

const HIDDEN: usize = 64;
const FFN: usize = 128;
const LAYERS: usize = 32;

#[derive(Module, ModuleTree, Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
}

#[derive(Module, ModuleTree, Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

#[derive(Module, ModuleTree, Debug)]
struct Layer {
    self_attn: Attention,
    mlp: Mlp,
}

#[derive(Module, ModuleTree, Debug)]
struct Model {
    layers: Vec<Layer>,
}

fn model(device: &Device) -> Model {
    let linear = |d_in, d_out| LinearConfig::new(d_in, d_out).with_bias(false).init(device);
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
                    gate_proj: linear(HIDDEN, FFN),
                    up_proj: linear(HIDDEN, FFN),
                    down_proj: linear(FFN, HIDDEN),
                },
            })
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let device = Device::default();
    let base = model(&device);
    let spec = TargetSpec::parse(["all-linear"]).unwrap();
    let selection = LoraSelection::resolve(&base, &spec).unwrap();
    assert_eq!(selection.layers().len(), LAYERS * 7);

    c.bench_function("burn select all-linear (224 linears)", |b| {
        b.iter(|| LoraSelection::resolve(black_box(&base), &spec).unwrap());
    });
    c.bench_function("burn apply_lora with the group (224 linears)", |b| {
        b.iter(|| base.clone().apply_lora(selection.lora(8, 16.0)));
    });

    let adapted = base.clone().apply_lora(selection.lora(8, 16.0));
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    // Written once here, so that the load bench runs on its own too.
    save_peft_adapter(&adapted, dir, &LoraConfig::default()).unwrap();
    c.bench_function("burn save_peft_adapter (224 adapters)", |b| {
        b.iter(|| save_peft_adapter(&adapted, dir, &LoraConfig::default()).unwrap());
    });
    c.bench_function("burn load_peft_adapter attach (224 adapters)", |b| {
        b.iter_batched(
            || base.clone(),
            |mut model| {
                load_peft_adapter(&mut model, dir, LoadMode::Attach).unwrap();
                model
            },
            criterion::BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
