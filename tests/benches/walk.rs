//! Walking and naming a DeepSeek-V3-shaped model: 61 decoder layers, the first 3 dense, the
//! others with 256 routed experts (a `Vec` of 3-linear MLPs), a router and 1 shared expert.
//!
//! `walk` reports its time per node (criterion's element throughput). The targets of the
//! performance work: `walk` ≤ 4 ns per node with no allocation per node,
//! `find_all_linear_modules` ≤ 0.75 ms, and `named_modules` ≤ 60 ns per node at about 300,000
//! nodes (`named_modules_scaling`), its time per node not growing with the model.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use moduletree_tests::models::deepseek_v3;

fn bench(c: &mut Criterion) {
    let model = deepseek_v3(61, 3, 256, false);
    let mut nodes = 0_u64;
    moduletree::walk(&model, |_| nodes += 1);
    println!("DeepSeek-V3-shaped model: {nodes} nodes");

    let mut group = c.benchmark_group("deepseek_v3");
    group.throughput(Throughput::Elements(nodes));
    group.bench_function("walk", |b| {
        b.iter(|| {
            let mut layers = 0_usize;
            moduletree::walk(black_box(&model), |node| {
                layers += usize::from(node.is_layer());
            });
            layers
        });
    });
    group.bench_function("find_all_linear_modules", |b| {
        b.iter(|| moduletree::find_all_linear_modules(black_box(&model)));
    });
    // The list is dropped outside the timing: freeing 2 strings per node is the caller's cost.
    group.bench_function("named_modules", |b| {
        b.iter_batched(
            || (),
            |()| moduletree::named_modules(black_box(&model)),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// `named_modules` per node as the model grows: the DeepSeek-V3 shape with more routed experts,
/// to about 300,000 and 1,000,000 nodes. Its time per node should not grow with the model.
fn named_modules_scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("named_modules_scaling");
    group.sample_size(10);
    for experts in [256, 1290, 3500] {
        let model = deepseek_v3(61, 3, experts, false);
        let mut nodes = 0_u64;
        moduletree::walk(&model, |_| nodes += 1);
        group.throughput(Throughput::Elements(nodes));
        group.bench_function(format!("{nodes}_nodes"), |b| {
            b.iter_batched(
                || (),
                |()| moduletree::named_modules(black_box(&model)),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench, named_modules_scaling);
criterion_main!(benches);
