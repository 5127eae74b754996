//! The cost of an unmerged LoRA adapter: forward of a 1024×1024 linear with an r = 16 adapter
//! at batch 8, unmerged (`base(x) + scale · B(A(x))`) against the same adapter merged into the
//! weight. The bound to hold is unmerged ≤ 1.3 × merged.

use candle_core::{Device, Module, Tensor};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use moduletree::candle::{LoraAdapter, LoraLinear};

const FEATURES: usize = 1024;
const RANK: usize = 16;
const BATCH: usize = 8;

fn layers() -> (LoraLinear, LoraLinear, Tensor) {
    let device = Device::Cpu;
    let weight = Tensor::randn(0f32, 0.03, (FEATURES, FEATURES), &device).unwrap();
    let bias = Tensor::randn(0f32, 0.1, FEATURES, &device).unwrap();
    let a = Tensor::randn(0f32, 0.03, (RANK, FEATURES), &device).unwrap();
    let b = Tensor::randn(0f32, 0.03, (FEATURES, RANK), &device).unwrap();
    let adapter = LoraAdapter::new(a, b, 32.0, false).unwrap();
    let mut unmerged = LoraLinear::new(candle_nn::Linear::new(weight, Some(bias)));
    unmerged.add_adapter("default", adapter).unwrap();
    let mut merged = unmerged.clone();
    merged.merge().unwrap();
    let x = Tensor::randn(0f32, 1.0, (BATCH, FEATURES), &device).unwrap();
    (unmerged, merged, x)
}

fn forward(c: &mut Criterion) {
    let (unmerged, merged, x) = layers();
    let mut group = c.benchmark_group("lora_forward_1024x1024_r16_batch8");
    group.bench_function("merged", |bench| {
        bench.iter(|| merged.forward(black_box(&x)).unwrap());
    });
    group.bench_function("unmerged", |bench| {
        bench.iter(|| unmerged.forward(black_box(&x)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
