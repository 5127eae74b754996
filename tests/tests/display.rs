//! The folded display: PyTorch-like lines with kinds and flags, runs of same-shaped elements
//! folded with inclusive index ranges, the DeepSeek-V3-shaped model pinned as a snapshot, and the
//! JSON form.

mod fixture_common;

use fixture_common::assert_snapshot;
use moduletree::ModuleTree;
use moduletree::display::{Summary, Tree};
use moduletree_tests::models::{
    DeepseekMlp, DeepseekMoe, DeepseekV3, Linear, Mlp, TopkRouter, deepseek_v3, llama, mixtral,
    qwen2_moe,
};

#[test]
fn llama_prints_like_pytorch_with_layers_folded() {
    let expected = "\
ForCausalLm
  model: Decoder
    embed_tokens: Embedding [embedding]
    layers: 0..2 × LlamaDecoderLayer
      self_attn: Attention
        q_proj: Linear [linear]
        k_proj: Linear [linear]
        v_proj: Linear [linear]
        o_proj: Linear [linear]
      mlp: Mlp
        gate_proj: Linear [linear]
        up_proj: Linear [linear]
        down_proj: Linear [linear]
      input_layernorm: RmsNorm [norm]
      post_attention_layernorm: RmsNorm [norm]
    norm: RmsNorm [norm]
  lm_head: Linear [linear, head]
";
    assert_eq!(Tree::of(&llama(3)).to_string(), expected);
}

#[test]
fn deepseek_v3_fits_on_a_screen() {
    let tree = Tree::of(&deepseek_v3(61, 3, 256, false));
    let text = tree.to_string();
    assert!(
        tree.line_count() <= 50,
        "{} lines:\n{text}",
        tree.line_count()
    );
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let at = |line: &str| {
        lines
            .iter()
            .position(|candidate| *candidate == line)
            .unwrap_or_else(|| panic!("no line `{line}` in\n{text}"))
    };
    // Two runs of decoder layers: three dense, then 58 with 256 routed experts each.
    assert_eq!(at("layers: Vec") + 1, at("0..2 × DeepseekDecoderLayer"));
    assert!(at("3..60 × DeepseekDecoderLayer") > at("0..2 × DeepseekDecoderLayer"));
    assert_eq!(
        at("mlp: DeepseekMoe") + 1,
        at("experts: 0..255 × Mlp [expert]")
    );
    at("gate: TopkRouter [router]");
    at("gate_proj: Linear [linear, expert]");
    at("lm_head: Linear [linear, head]");
    assert_snapshot("deepseek_v3.txt", &text);
}

#[test]
fn fused_experts_show_as_grouped_linear() {
    let text = Tree::of(&deepseek_v3(61, 3, 256, true)).to_string();
    assert!(text.contains("\n        mlp: DeepseekFusedMoe\n          experts: FusedExperts\n            gate_up_proj: Linear [grouped_linear, expert]\n"), "{text}");
}

#[test]
fn an_enum_mixed_list_folds_into_one_run_per_variant() {
    let router = TopkRouter {
        experts: 2,
        top_k: 1,
    };
    let moe = || DeepseekMoe {
        experts: vec![Mlp::new(4, 4), Mlp::new(4, 4)],
        gate: router.clone(),
        shared_experts: Mlp::new(4, 4),
    };
    let mut list: Vec<DeepseekMlp> = (0..3).map(|_| DeepseekMlp::Dense(Mlp::new(4, 8))).collect();
    list.extend((3..61).map(|_| DeepseekMlp::Moe(moe())));
    let text = Tree::of(&list).to_string();
    let heads: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("    "))
        .collect();
    assert_eq!(
        heads,
        ["Vec", "  0..2 × Mlp", "  3..60 × DeepseekMoe"],
        "{text}"
    );
}

#[test]
fn elements_of_different_shapes_are_not_folded() {
    // Same types, but one layer has one more expert: its subtree differs.
    let mut model = mixtral(3, 2);
    let extra = model.model.layers[0].block_sparse_moe.experts[0].clone();
    model.model.layers[1].block_sparse_moe.experts.push(extra);
    let text = Tree::of(&model).to_string();
    for line in [
        "      0: MixtralDecoderLayer\n",
        "      1: MixtralDecoderLayer\n",
        "      2: MixtralDecoderLayer (same as 0)\n",
        "          experts: 0..1 × MixtralExpert [expert]\n",
        "          experts: 0..2 × MixtralExpert [expert]\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}

#[test]
fn same_shapes_that_are_not_adjacent_are_printed_once() {
    // Dense layers 0 and 2 alternate with sparse ones: four runs of one, two of them repeats.
    let text = Tree::of(&qwen2_moe(4, 3, &[0, 2])).to_string();
    let layers: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("      ") && !line.starts_with("       "))
        .collect();
    assert_eq!(
        layers,
        [
            "      0: Qwen2MoeDecoderLayer",
            "      1: Qwen2MoeDecoderLayer",
            "      2: Qwen2MoeDecoderLayer (same as 0)",
            "      3: Qwen2MoeDecoderLayer (same as 1)"
        ]
    );
    // Layer 0's subtree is printed, layer 2's is not: one dense `mlp: Mlp` in all.
    assert_eq!(text.matches("        mlp: Mlp\n").count(), 1, "{text}");
    assert_eq!(
        text.matches("        mlp: Qwen2MoeSparseBlock\n").count(),
        1,
        "{text}"
    );
}

#[test]
fn a_repeated_run_refers_to_the_first() {
    // Three dense, two sparse, three dense again.
    let text = Tree::of(&qwen2_moe(8, 2, &[0, 1, 2, 5, 6, 7])).to_string();
    assert!(
        text.contains("\n      5..7 × Qwen2MoeDecoderLayer (same as 0..2)\n"),
        "{text}"
    );
    assert!(
        text.contains("\n      3..4 × Qwen2MoeDecoderLayer\n"),
        "{text}"
    );
}

#[test]
fn details_take_part_in_folding() {
    let layers = vec![Linear::new(4, 4), Linear::new(4, 4), Linear::new(4, 8)];
    let tree = Tree::with_detail(&layers, |node| {
        let linear = node.downcast_ref::<Linear>()?;
        Some(format!("{}, {}", linear.in_features, linear.out_features))
    });
    assert_eq!(
        tree.to_string(),
        "Vec\n  0..1 × Linear(4, 4) [linear]\n  2: Linear(4, 8) [linear]\n"
    );
}

#[test]
fn empty_containers_and_non_modules() {
    assert_eq!(Tree::of(&Vec::<Mlp>::new()).to_string(), "Vec (empty)\n");
    assert!(Tree::of(&3_usize).roots().is_empty());
    assert_eq!(Tree::of(&3_usize).to_string(), "");
}

#[test]
fn a_schema_shows_wildcards_and_every_variant() {
    let text = Tree::of(&DeepseekV3::SCHEMA).to_string();
    for line in [
        "    layers: <> × DeepseekDecoderLayer\n",
        "      mlp: Mlp (one of 3)\n",
        "      mlp: DeepseekMoe (one of 3)\n",
        "        experts: <> × Mlp [expert]\n",
        "      mlp: DeepseekFusedMoe (one of 3)\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}

#[test]
fn json_keeps_the_runs() {
    let json = Tree::of(&deepseek_v3(61, 3, 256, false)).to_json();
    let root = &json[0];
    assert_eq!(root["type"], "ForCausalLm");
    assert_eq!(root["role"], "module");
    let decoder = &root["children"][0];
    assert_eq!(decoder["label"], "model");
    let layers = &decoder["children"][1];
    assert_eq!(layers["label"], "layers");
    assert_eq!(layers["role"], "container");
    let runs: Vec<(u64, u64, u64)> = layers["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            (
                run["first"].as_u64().unwrap(),
                run["last"].as_u64().unwrap(),
                run["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(runs, [(0, 2, 3), (3, 60, 58)]);
    let lm_head = &root["children"][1];
    assert_eq!(lm_head["kind"], "linear");
    assert_eq!(lm_head["head"], true);
    assert_eq!(lm_head["expert"], false);
}

#[test]
fn summary_lists_targets_and_experts() {
    let summary = Summary::of(&deepseek_v3(5, 2, 4, false));
    assert_eq!(summary.embedding, ["embed_tokens"]);
    assert_eq!(summary.router, ["gate"]);
    assert_eq!(
        summary.experts,
        [
            "model.layers.<>.mlp.experts.<>.gate_proj",
            "model.layers.<>.mlp.experts.<>.up_proj",
            "model.layers.<>.mlp.experts.<>.down_proj"
        ]
    );
    let text = summary.to_string();
    assert!(text.contains("\nrouter targets: gate\n"), "{text}");
    assert!(
        text.contains("\nembedding targets: embed_tokens\n"),
        "{text}"
    );
    assert_eq!(summary.to_json()["router"][0], "gate");
    let dense = Summary::of(&llama(2));
    assert!(dense.to_string().contains("\nexpert layers: none\n"));
}

/// A layer type inspected on its own: its one target is the root, which the text says in words
/// rather than as an empty name or a bare `^`.
#[test]
fn summary_of_a_layer_type_names_the_root() {
    #[derive(ModuleTree)]
    #[expert]
    #[layer(kind = "grouped_linear")]
    struct Bank;

    let linear = Summary::of(&Linear::SCHEMA);
    assert_eq!(linear.linear, ["^"]);
    let text = linear.to_string();
    assert!(text.contains("\nlinear targets: (the root)\n"), "{text}");
    assert!(text.contains("\nexpert layers: none\n"), "{text}");

    let bank = Summary::of(&Bank);
    assert_eq!(bank.experts, [""]);
    let text = bank.to_string();
    assert!(text.contains("\nexpert layers: (the root)\n"), "{text}");
}
