//! Resolving target specs on a DeepSeek-V3-shaped model: 61 decoder layers, the first 3 dense,
//! the others with 256 routed experts (a `Vec` of 3-linear MLPs), a router and 1 shared expert.
//!
//! The target of the performance work: resolving `["all-linear"]` in at most 2 ms, about twice
//! one walk of the same model.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use moduletree::target::TargetSpec;
use moduletree_tests::models::deepseek_v3;

/// A leaf name, a pattern through the layer and expert lists, a shorthand, and an anchored
/// pattern with `*` and `**`; resolved with one exclusion.
const MIXED: [&str; 4] = [
    "q_a_proj",
    "layers.<>.mlp.experts.<>.down_proj",
    "all-router",
    "^model.layers.*.mlp.shared_experts.**",
];

/// The fourth entry as a regex: it is matched against every node's joined path.
const REGEX: &str = r"re:model\.layers\.\d+\.mlp\.shared_experts\..*";

fn bench(c: &mut Criterion) {
    let model = deepseek_v3(61, 3, 256, false);
    let all_linear = TargetSpec::parse(["all-linear"]).unwrap();
    let mixed = TargetSpec::parse(MIXED)
        .unwrap()
        .with_exclusions(["experts.0.*"])
        .unwrap();
    let mut with_regex = MIXED;
    with_regex[3] = REGEX;
    let mixed_regex = TargetSpec::parse(with_regex)
        .unwrap()
        .with_exclusions(["experts.0.*"])
        .unwrap();
    let selected = all_linear.resolve(&model).unwrap().layers().len();
    let mixed_selected = mixed.resolve(&model).unwrap().layers().len();
    assert_eq!(
        mixed_regex.resolve(&model).unwrap().layers().len(),
        mixed_selected
    );
    println!("all-linear selects {selected} layers; the mixed specs {mixed_selected}");

    let mut group = c.benchmark_group("deepseek_v3_targets");
    group.bench_function("resolve_all_linear", |b| {
        b.iter(|| all_linear.resolve(black_box(&model)).unwrap());
    });
    // The same, with the resolution dropped outside the timing, as `named_modules` is: freeing
    // a string per selected layer is the caller's cost.
    group.bench_function("resolve_all_linear_without_drop", |b| {
        b.iter_batched(
            || (),
            |()| all_linear.resolve(black_box(&model)).unwrap(),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("resolve_mixed_4", |b| {
        b.iter(|| mixed.resolve(black_box(&model)).unwrap());
    });
    group.bench_function("resolve_mixed_4_with_regex", |b| {
        b.iter(|| mixed_regex.resolve(black_box(&model)).unwrap());
    });
    group.bench_function("parse_mixed_4_with_regex", |b| {
        b.iter(|| TargetSpec::parse(black_box(with_regex)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
