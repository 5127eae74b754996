//! The cost of an unmerged LoRA adapter on experts fused in one weight: a top-2 MoE layer's
//! experts (hidden 1024, expert width 1024, r = 16 per expert) over 64 tokens, each expert
//! computing the tokens routed to it, unmerged (`x W_eᵀ + scale · (x A_eᵀ) B_eᵀ`) against the
//! same adapter merged into the bank. The bound to hold is unmerged ≤ 1.5 × merged, for
//! E = 8 and E = 64.

use candle_core::{Device, Tensor};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use moduletree::candle::{ExpertAdapter, ExpertBank};

const HIDDEN: usize = 1024;
const WIDTH: usize = 1024;
const RANK: usize = 16;
const TOKENS: usize = 64;
const TOP_K: usize = 2;

fn banks(experts: usize) -> (ExpertBank, ExpertBank) {
    let device = Device::Cpu;
    let weight = Tensor::randn(0f32, 0.02, (experts, WIDTH, HIDDEN), &device).unwrap();
    let a = Tensor::randn(0f32, 0.02, (experts * RANK, HIDDEN), &device).unwrap();
    let b = Tensor::randn(0f32, 0.02, (WIDTH, RANK * experts), &device).unwrap();
    let mut unmerged = ExpertBank::new(weight).unwrap();
    unmerged
        .add_adapter(
            "default",
            ExpertAdapter::new(a, b, experts, 32.0, false).unwrap(),
        )
        .unwrap();
    let mut merged = unmerged.clone();
    merged.merge().unwrap();
    (unmerged, merged)
}

/// Each expert's share of `TOKENS · TOP_K` routed tokens, as inputs.
fn routed(experts: usize) -> Vec<Tensor> {
    let per_expert = (TOKENS * TOP_K).div_ceil(experts).max(1);
    (0..experts)
        .map(|_| Tensor::randn(0f32, 1.0, (per_expert, HIDDEN), &Device::Cpu).unwrap())
        .collect()
}

fn forward(c: &mut Criterion) {
    for experts in [8, 64] {
        let (unmerged, merged) = banks(experts);
        let inputs = routed(experts);
        let mut group = c.benchmark_group(format!("experts_forward_E{experts}_h1024_r16_top2"));
        for (name, bank) in [("merged", &merged), ("unmerged", &unmerged)] {
            group.bench_function(name, |bench| {
                bench.iter(|| {
                    for (expert, x) in inputs.iter().enumerate() {
                        black_box(bank.forward_expert(expert, x).unwrap());
                    }
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
