//! Shared experts are typed (`#[expert(shared)]`), not guessed from names: on every MoE test
//! model, `all-experts` selects the routed experts' linears in any storage, `all-shared-experts`
//! the shared experts' linears, and `all-linear` both plus the dense layers, as before. Routed
//! and shared never overlap, and a shared expert is not an expert (`is_expert` is false).

use moduletree::target::TargetSpec;
use moduletree::{Expertise, ModuleTree, Walk};
use moduletree_tests::models::{deepseek_v3, mixtral, qwen2_moe};

fn selected<T: Walk + ?Sized>(model: &T, entry: &str) -> Vec<String> {
    TargetSpec::parse([entry])
        .unwrap()
        .resolve(model)
        .map(|resolution| resolution.paths().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Every leaf layer's path with its expertise, from the walk.
fn layers<T: Walk + ?Sized>(model: &T) -> Vec<(String, Expertise, bool)> {
    let mut found = Vec::new();
    moduletree::walk(model, |node| {
        if let Some(kind) = node.kind() {
            found.push((
                node.path().to_string(),
                node.expertise(),
                kind.is_linear_family() && !node.is_head(),
            ));
        }
    });
    found
}

fn check<T: ModuleTree>(model: &T, name: &str, routed: usize, shared: usize) {
    let all = layers(model);
    let by = |expertise| -> Vec<String> {
        all.iter()
            .filter(|(_, found, linear)| *found == expertise && *linear)
            .map(|(path, ..)| path.clone())
            .collect()
    };
    let experts = selected(model, "all-experts");
    let shared_experts = selected(model, "all-shared-experts");
    assert_eq!(experts, by(Expertise::Routed), "{name}: all-experts");
    assert_eq!(
        shared_experts,
        by(Expertise::Shared),
        "{name}: all-shared-experts"
    );
    assert_eq!(
        (experts.len(), shared_experts.len()),
        (routed, shared),
        "{name}"
    );
    assert!(
        experts.iter().all(|path| !shared_experts.contains(path)),
        "{name}"
    );
    // all-linear keeps its meaning: the linear family without heads, routed and shared included.
    let linear = selected(model, "all-linear");
    assert!(
        experts
            .iter()
            .chain(&shared_experts)
            .all(|path| linear.contains(path)),
        "{name}"
    );
    // The static schema agrees with the instance.
    assert_eq!(
        selected(&T::SCHEMA, "all-shared-experts").len().min(1),
        usize::from(shared > 0),
        "{name}: schema"
    );
    // Shared experts are no experts: set_linear_is_expert leaves them alone.
    for (path, expertise, _) in &all {
        if *expertise == Expertise::Shared {
            assert!(path.contains("shared_expert"), "{name}: {path}");
        }
    }
}

#[test]
fn mixtral_has_routed_experts_only() {
    // 2 layers × 4 experts × 3 linears.
    check(&mixtral(2, 4), "mixtral", 2 * 4 * 3, 0);
}

#[test]
fn qwen2_moe_has_a_shared_expert_per_sparse_layer() {
    // Layer 1 dense; layers 0 and 2 sparse: 4 experts × 3 linears + a shared MLP of 3 linears.
    check(&qwen2_moe(3, 4, &[1]), "qwen2_moe", 2 * 4 * 3, 2 * 3);
}

#[test]
fn deepseek_v3_routed_experts_in_any_storage() {
    // 3 layers, the first dense; MoE layers: 4 experts × 3 linears + 3 shared linears.
    check(
        &deepseek_v3(3, 1, 4, false),
        "deepseek_v3",
        2 * 4 * 3,
        2 * 3,
    );
    // Fused: each MoE layer's experts are two grouped_linear banks.
    check(
        &deepseek_v3(3, 1, 4, true),
        "deepseek_v3 fused",
        2 * 2,
        2 * 3,
    );
}

#[test]
fn set_linear_is_expert_marks_routed_experts_only() {
    let mut model = qwen2_moe(2, 2, &[]);
    let marked = moduletree::set_linear_is_expert(&mut model);
    assert!(!marked.is_empty());
    assert!(
        marked.iter().all(|path| path.contains(".experts.")),
        "{marked:?}"
    );
}

#[test]
fn a_checkpoints_shared_expert_beside_routed_ones_is_typed_shared() {
    use moduletree::checkpoint::{Checkpoint, Dtype, TensorInfo};
    let tensor = |name: &str| TensorInfo {
        name: format!("{name}.weight"),
        dtype: Dtype::F32,
        shape: vec![4, 4],
        data_offsets: (0, 64),
    };
    let mut names = Vec::new();
    for expert in 0..2 {
        for proj in ["gate_proj", "up_proj", "down_proj"] {
            names.push(tensor(&format!(
                "model.layers.0.mlp.experts.{expert}.{proj}"
            )));
        }
    }
    for proj in ["gate_proj", "up_proj", "down_proj"] {
        names.push(tensor(&format!("model.layers.0.mlp.shared_expert.{proj}")));
        // Not beside routed experts: a plain MLP, whatever its name.
        names.push(tensor(&format!("model.layers.1.shared_expert.{proj}")));
    }
    names.push(tensor("model.layers.0.mlp.gate"));
    let checkpoint = Checkpoint::from_tensors(Vec::new(), names);
    assert_eq!(
        selected(&checkpoint, "all-shared-experts"),
        [
            "model.layers.0.mlp.shared_expert.down_proj",
            "model.layers.0.mlp.shared_expert.gate_proj",
            "model.layers.0.mlp.shared_expert.up_proj",
        ]
    );
    assert_eq!(selected(&checkpoint, "all-experts").len(), 6);
}
