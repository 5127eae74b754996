//! Walking allocates nothing per node: a counting global allocator sees the same few
//! allocations (the path buffer growing to the tree's depth) for a model and for one ten times
//! larger.
//!
//! One test function only: the allocator counts every thread, and the test harness would run
//! other tests beside it.
#![allow(
    unsafe_code,
    reason = "a global allocator is an `unsafe impl GlobalAlloc`; it only forwards to `System`"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use moduletree_tests::models::{deepseek_v3, llama, mixtral};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; `ptr` and `layout` come from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocations made by `run`, and its result.
fn allocations<R>(run: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let result = run();
    (ALLOCATIONS.load(Ordering::Relaxed) - before, result)
}

/// Walks `model`, counting its nodes; the visitor itself allocates nothing.
fn count_nodes<T: moduletree::ModuleTree>(model: &T) -> usize {
    let mut nodes = 0;
    moduletree::walk(model, |node| {
        nodes += 1;
        std::hint::black_box(node.path().last());
    });
    nodes
}

fn count_nodes_mut<T: moduletree::ModuleTree>(model: &mut T) -> usize {
    let mut nodes = 0;
    moduletree::walk_mut(model, |node| {
        nodes += 1;
        std::hint::black_box(node.is_expert());
    });
    nodes
}

/// At most this many allocations per walk: the path buffer growing to the tree's depth
/// (capacities 4, 8, 16).
const PER_WALK: usize = 4;

/// Walks `small` and `large`, which has at least ten times the nodes, and compares.
fn assert_constant<T: moduletree::ModuleTree>(small: &T, large: &T) {
    let (small_allocations, small_nodes) = allocations(|| count_nodes(small));
    let (large_allocations, large_nodes) = allocations(|| count_nodes(large));
    assert!(
        large_nodes >= 10 * small_nodes,
        "{large_nodes} vs {small_nodes}"
    );
    assert_eq!(small_allocations, large_allocations);
    assert!(
        small_allocations <= PER_WALK,
        "{small_allocations} allocations"
    );
}

#[test]
fn walking_allocates_nothing_per_node() {
    assert_constant(&llama(2), &llama(25));
    assert_constant(&deepseek_v3(2, 1, 4, false), &deepseek_v3(20, 10, 8, false));

    let (mut small, mut large) = (mixtral(2, 2), mixtral(20, 8));
    let (small_allocations, small_nodes) = allocations(|| count_nodes_mut(&mut small));
    let (large_allocations, large_nodes) = allocations(|| count_nodes_mut(&mut large));
    assert!(
        large_nodes >= 10 * small_nodes,
        "{large_nodes} vs {small_nodes}"
    );
    assert_eq!(small_allocations, large_allocations);
    assert!(
        small_allocations <= PER_WALK,
        "{small_allocations} allocations"
    );

    // The counter sees allocations: one `String` is one more, one per node is one per node.
    let (counted, _) = allocations(|| std::hint::black_box(String::from("counted")));
    assert_eq!(counted, 1);
    let model = llama(2);
    let (per_node, nodes) = allocations(|| {
        let mut paths = Vec::with_capacity(64);
        moduletree::walk(&model, |node| paths.push(node.path().to_string()));
        paths.len()
    });
    assert!(per_node > nodes, "{per_node} allocations for {nodes} nodes");
}
