//! The reference functions on model shapes named the way HuggingFace names them: the exact
//! `named_modules` of each model (path, type, kind and flags of every node), the exact outputs of
//! `find_layers`' family and of `set_linear_is_expert`, and the static schema's answers.
//!
//! The expected lists are written from HuggingFace's module names for Llama, Mixtral, Qwen2-MoE
//! and DeepSeek-V3 (`model.layers.0.self_attn.q_proj`, `block_sparse_moe.experts.0.w1`, …), not
//! from this crate's output.

use moduletree::{Kind, ModuleTree, NamedModule, Role};
use moduletree_tests::models::{
    DeepseekMlp, DeepseekV3, Llama, Mixtral, Qwen2Moe, Qwen2MoeMlp, deepseek_v3, llama, mixtral,
    qwen2_moe,
};

/// One line per node: `path = Type [kind] [expert] [head]`, the root as `= Type`.
fn describe(modules: &[NamedModule]) -> Vec<String> {
    modules
        .iter()
        .map(|module| {
            let mut line = format!("{} = {}", module.path(), module.type_name());
            if let Some(kind) = module.kind() {
                line.push(' ');
                line.push_str(kind.name());
            }
            if module.is_expert() {
                line.push_str(" expert");
            }
            if module.is_head() {
                line.push_str(" head");
            }
            line.trim_start().to_owned()
        })
        .collect()
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

fn assert_tree<T: ModuleTree>(model: &T, expected: &str) {
    let modules = moduletree::named_modules(model);
    assert_eq!(describe(&modules), lines(expected));
    // The normalized path is the path with every index as `<>`, and the root comes first.
    assert_eq!(modules[0].path(), "");
    for module in &modules {
        assert_eq!(module.normalized(), moduletree::normalize(module.path()));
    }
}

// ---------------------------------------------------------------- Llama

const LLAMA_2: &str = "
    = ForCausalLm
    model = Decoder
    model.embed_tokens = Embedding embedding
    model.layers = Vec
    model.layers.0 = LlamaDecoderLayer
    model.layers.0.self_attn = Attention
    model.layers.0.self_attn.q_proj = Linear linear
    model.layers.0.self_attn.k_proj = Linear linear
    model.layers.0.self_attn.v_proj = Linear linear
    model.layers.0.self_attn.o_proj = Linear linear
    model.layers.0.mlp = Mlp
    model.layers.0.mlp.gate_proj = Linear linear
    model.layers.0.mlp.up_proj = Linear linear
    model.layers.0.mlp.down_proj = Linear linear
    model.layers.0.input_layernorm = RmsNorm norm
    model.layers.0.post_attention_layernorm = RmsNorm norm
    model.layers.1 = LlamaDecoderLayer
    model.layers.1.self_attn = Attention
    model.layers.1.self_attn.q_proj = Linear linear
    model.layers.1.self_attn.k_proj = Linear linear
    model.layers.1.self_attn.v_proj = Linear linear
    model.layers.1.self_attn.o_proj = Linear linear
    model.layers.1.mlp = Mlp
    model.layers.1.mlp.gate_proj = Linear linear
    model.layers.1.mlp.up_proj = Linear linear
    model.layers.1.mlp.down_proj = Linear linear
    model.layers.1.input_layernorm = RmsNorm norm
    model.layers.1.post_attention_layernorm = RmsNorm norm
    model.norm = RmsNorm norm
    lm_head = Linear linear head
";

#[test]
fn llama_named_modules() {
    assert_tree(&llama(2), LLAMA_2);
}

#[test]
fn llama_layer_index_and_roles() {
    let modules = moduletree::named_modules(&llama(2));
    let find = |path: &str| modules.iter().find(|module| module.path() == path).unwrap();
    assert_eq!(find("model.layers.1.mlp.up_proj").layer_index(), Some(1));
    assert_eq!(find("model.layers.0").layer_index(), Some(0));
    assert_eq!(find("model.layers").layer_index(), None);
    assert_eq!(find("lm_head").layer_index(), None);
    assert_eq!(find("model.layers").role(), Role::Container);
    assert_eq!(find("model.layers.0").role(), Role::Module);
    assert_eq!(find("model.norm").role(), Role::Layer(Kind::Norm));
    assert_eq!(
        find("model.layers.1.mlp.up_proj").normalized(),
        "model.layers.<>.mlp.up_proj"
    );
}

#[test]
fn llama_reference_functions() {
    let mut model = llama(2);
    assert_eq!(
        moduletree::find_all_linear_modules(&model),
        [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj"
        ]
    );
    assert_eq!(
        moduletree::find_all_embedding_modules(&model),
        ["embed_tokens"]
    );
    assert!(moduletree::find_all_router_modules(&model).is_empty());
    let before = model.clone();
    assert!(moduletree::set_linear_is_expert(&mut model).is_empty());
    assert_eq!(model, before, "a dense model has no expert to mark");
}

#[test]
fn llama_find_layers_with_a_custom_condition() {
    // The norms: `model.norm` must not collapse with the per-layer norms, whose leaf names differ.
    let norms = moduletree::find_layers(&llama(2), |node| node.kind() == Some(Kind::Norm));
    assert_eq!(
        norms,
        ["input_layernorm", "post_attention_layernorm", "norm"]
    );
    // The head alone: `lm_head` is its own name.
    let heads = moduletree::find_layers(&llama(2), |node| node.is_head());
    assert_eq!(heads, ["lm_head"]);
    // The decoder layers themselves: never the bare index `<>`, which would name every element
    // of every list; the name starts at the list's own name.
    let layers = moduletree::find_layers(&llama(2), |node| node.type_name() == "LlamaDecoderLayer");
    assert_eq!(layers, ["layers.<>"]);
    // Layer 0's projections only: each shares its normalized path with layer 1's, so no suffix
    // tells them apart and each comes anchored at the root.
    let layer_zero = moduletree::find_layers(&llama(2), |node| {
        node.layer_index() == Some(0) && node.kind() == Some(Kind::Linear)
    });
    assert_eq!(
        layer_zero,
        [
            "^model.layers.<>.self_attn.q_proj",
            "^model.layers.<>.self_attn.k_proj",
            "^model.layers.<>.self_attn.v_proj",
            "^model.layers.<>.self_attn.o_proj",
            "^model.layers.<>.mlp.gate_proj",
            "^model.layers.<>.mlp.up_proj",
            "^model.layers.<>.mlp.down_proj",
        ]
    );
}

#[test]
fn llama_static_schema_agrees_with_instances() {
    let model = llama(3);
    assert_schema_agrees(&model, &Llama::SCHEMA);
    assert_eq!(
        moduletree::find_all_linear_modules(&Llama::SCHEMA),
        [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj"
        ]
    );
    let schema_paths: Vec<String> = moduletree::named_modules(&Llama::SCHEMA)
        .into_iter()
        .map(|module| module.path().to_owned())
        .collect();
    assert_eq!(
        schema_paths,
        [
            "",
            "model",
            "model.embed_tokens",
            "model.layers",
            "model.layers.<>",
            "model.layers.<>.self_attn",
            "model.layers.<>.self_attn.q_proj",
            "model.layers.<>.self_attn.k_proj",
            "model.layers.<>.self_attn.v_proj",
            "model.layers.<>.self_attn.o_proj",
            "model.layers.<>.mlp",
            "model.layers.<>.mlp.gate_proj",
            "model.layers.<>.mlp.up_proj",
            "model.layers.<>.mlp.down_proj",
            "model.layers.<>.input_layernorm",
            "model.layers.<>.post_attention_layernorm",
            "model.norm",
            "lm_head",
        ]
    );
}

/// The static schema and an instance whose containers are non-empty (and whose enums take every
/// variant somewhere) give the same answers.
fn assert_schema_agrees<T: ModuleTree>(model: &T, schema: &moduletree::Schema) {
    assert_eq!(
        moduletree::find_all_linear_modules(schema),
        moduletree::find_all_linear_modules(model)
    );
    assert_eq!(
        moduletree::find_all_embedding_modules(schema),
        moduletree::find_all_embedding_modules(model)
    );
    assert_eq!(
        moduletree::find_all_router_modules(schema),
        moduletree::find_all_router_modules(model)
    );
    let experts = |modules: Vec<NamedModule>| -> Vec<String> {
        let mut experts: Vec<String> = modules
            .into_iter()
            .filter(|module| module.is_expert())
            .map(|module| module.normalized().to_string())
            .collect();
        experts.sort();
        experts.dedup();
        experts
    };
    assert_eq!(
        experts(moduletree::named_modules(schema)),
        experts(moduletree::named_modules(model))
    );
}

// ---------------------------------------------------------------- Mixtral

const MIXTRAL_2_2: &str = "
    = ForCausalLm
    model = Decoder
    model.embed_tokens = Embedding embedding
    model.layers = Vec
    model.layers.0 = MixtralDecoderLayer
    model.layers.0.self_attn = Attention
    model.layers.0.self_attn.q_proj = Linear linear
    model.layers.0.self_attn.k_proj = Linear linear
    model.layers.0.self_attn.v_proj = Linear linear
    model.layers.0.self_attn.o_proj = Linear linear
    model.layers.0.block_sparse_moe = MixtralSparseMoe
    model.layers.0.block_sparse_moe.gate = Linear router
    model.layers.0.block_sparse_moe.experts = Vec expert
    model.layers.0.block_sparse_moe.experts.0 = MixtralExpert expert
    model.layers.0.block_sparse_moe.experts.0.w1 = Linear linear expert
    model.layers.0.block_sparse_moe.experts.0.w2 = Linear linear expert
    model.layers.0.block_sparse_moe.experts.0.w3 = Linear linear expert
    model.layers.0.block_sparse_moe.experts.1 = MixtralExpert expert
    model.layers.0.block_sparse_moe.experts.1.w1 = Linear linear expert
    model.layers.0.block_sparse_moe.experts.1.w2 = Linear linear expert
    model.layers.0.block_sparse_moe.experts.1.w3 = Linear linear expert
    model.layers.0.input_layernorm = RmsNorm norm
    model.layers.0.post_attention_layernorm = RmsNorm norm
    model.layers.1 = MixtralDecoderLayer
    model.layers.1.self_attn = Attention
    model.layers.1.self_attn.q_proj = Linear linear
    model.layers.1.self_attn.k_proj = Linear linear
    model.layers.1.self_attn.v_proj = Linear linear
    model.layers.1.self_attn.o_proj = Linear linear
    model.layers.1.block_sparse_moe = MixtralSparseMoe
    model.layers.1.block_sparse_moe.gate = Linear router
    model.layers.1.block_sparse_moe.experts = Vec expert
    model.layers.1.block_sparse_moe.experts.0 = MixtralExpert expert
    model.layers.1.block_sparse_moe.experts.0.w1 = Linear linear expert
    model.layers.1.block_sparse_moe.experts.0.w2 = Linear linear expert
    model.layers.1.block_sparse_moe.experts.0.w3 = Linear linear expert
    model.layers.1.block_sparse_moe.experts.1 = MixtralExpert expert
    model.layers.1.block_sparse_moe.experts.1.w1 = Linear linear expert
    model.layers.1.block_sparse_moe.experts.1.w2 = Linear linear expert
    model.layers.1.block_sparse_moe.experts.1.w3 = Linear linear expert
    model.layers.1.input_layernorm = RmsNorm norm
    model.layers.1.post_attention_layernorm = RmsNorm norm
    model.norm = RmsNorm norm
    lm_head = Linear linear head
";

#[test]
fn mixtral_named_modules() {
    assert_tree(&mixtral(2, 2), MIXTRAL_2_2);
}

#[test]
fn mixtral_reference_functions() {
    let model = mixtral(2, 2);
    assert_eq!(
        moduletree::find_all_linear_modules(&model),
        ["q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3"]
    );
    assert_eq!(
        moduletree::find_all_embedding_modules(&model),
        ["embed_tokens"]
    );
    assert_eq!(moduletree::find_all_router_modules(&model), ["gate"]);
    assert_schema_agrees(&model, &Mixtral::SCHEMA);
}

#[test]
fn mixtral_set_linear_is_expert() {
    let mut model = mixtral(2, 2);
    let marked = moduletree::set_linear_is_expert(&mut model);
    assert_eq!(
        marked,
        [
            "model.layers.0.block_sparse_moe.experts.0.w1",
            "model.layers.0.block_sparse_moe.experts.0.w2",
            "model.layers.0.block_sparse_moe.experts.0.w3",
            "model.layers.0.block_sparse_moe.experts.1.w1",
            "model.layers.0.block_sparse_moe.experts.1.w2",
            "model.layers.0.block_sparse_moe.experts.1.w3",
            "model.layers.1.block_sparse_moe.experts.0.w1",
            "model.layers.1.block_sparse_moe.experts.0.w2",
            "model.layers.1.block_sparse_moe.experts.0.w3",
            "model.layers.1.block_sparse_moe.experts.1.w1",
            "model.layers.1.block_sparse_moe.experts.1.w2",
            "model.layers.1.block_sparse_moe.experts.1.w3",
        ]
    );
    for layer in &model.model.layers {
        for expert in &layer.block_sparse_moe.experts {
            assert!(expert.w1.is_expert && expert.w2.is_expert && expert.w3.is_expert);
        }
        let attention = &layer.self_attn;
        for linear in [
            &attention.q_proj,
            &attention.k_proj,
            &attention.v_proj,
            &attention.o_proj,
        ] {
            assert!(!linear.is_expert);
        }
        assert!(
            !layer.block_sparse_moe.gate.is_expert,
            "the router is not an expert"
        );
    }
    assert!(!model.lm_head.is_expert);
    // Marking twice marks the same layers and changes nothing more.
    let again = model.clone();
    assert_eq!(moduletree::set_linear_is_expert(&mut model), marked);
    assert_eq!(model, again);
}

// ---------------------------------------------------------------- Qwen2-MoE

/// Layer 0 sparse (router, two routed experts, a shared expert and its gate), layer 1 dense.
const QWEN2_MOE: &str = "
    = ForCausalLm
    model = Decoder
    model.embed_tokens = Embedding embedding
    model.layers = Vec
    model.layers.0 = Qwen2MoeDecoderLayer
    model.layers.0.self_attn = Attention
    model.layers.0.self_attn.q_proj = Linear linear
    model.layers.0.self_attn.k_proj = Linear linear
    model.layers.0.self_attn.v_proj = Linear linear
    model.layers.0.self_attn.o_proj = Linear linear
    model.layers.0.mlp = Qwen2MoeSparseBlock
    model.layers.0.mlp.gate = Linear router
    model.layers.0.mlp.experts = Vec expert
    model.layers.0.mlp.experts.0 = Mlp expert
    model.layers.0.mlp.experts.0.gate_proj = Linear linear expert
    model.layers.0.mlp.experts.0.up_proj = Linear linear expert
    model.layers.0.mlp.experts.0.down_proj = Linear linear expert
    model.layers.0.mlp.experts.1 = Mlp expert
    model.layers.0.mlp.experts.1.gate_proj = Linear linear expert
    model.layers.0.mlp.experts.1.up_proj = Linear linear expert
    model.layers.0.mlp.experts.1.down_proj = Linear linear expert
    model.layers.0.mlp.shared_expert = Mlp
    model.layers.0.mlp.shared_expert.gate_proj = Linear linear
    model.layers.0.mlp.shared_expert.up_proj = Linear linear
    model.layers.0.mlp.shared_expert.down_proj = Linear linear
    model.layers.0.mlp.shared_expert_gate = Linear linear
    model.layers.0.input_layernorm = RmsNorm norm
    model.layers.0.post_attention_layernorm = RmsNorm norm
    model.layers.1 = Qwen2MoeDecoderLayer
    model.layers.1.self_attn = Attention
    model.layers.1.self_attn.q_proj = Linear linear
    model.layers.1.self_attn.k_proj = Linear linear
    model.layers.1.self_attn.v_proj = Linear linear
    model.layers.1.self_attn.o_proj = Linear linear
    model.layers.1.mlp = Mlp
    model.layers.1.mlp.gate_proj = Linear linear
    model.layers.1.mlp.up_proj = Linear linear
    model.layers.1.mlp.down_proj = Linear linear
    model.layers.1.input_layernorm = RmsNorm norm
    model.layers.1.post_attention_layernorm = RmsNorm norm
    model.norm = RmsNorm norm
    lm_head = Linear linear head
";

#[test]
fn qwen2_moe_named_modules() {
    assert_tree(&qwen2_moe(2, 2, &[1]), QWEN2_MOE);
}

#[test]
fn qwen2_moe_reference_functions() {
    let model = qwen2_moe(2, 2, &[1]);
    assert_eq!(
        moduletree::find_all_linear_modules(&model),
        [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
            "shared_expert_gate",
        ]
    );
    assert_eq!(
        moduletree::find_all_embedding_modules(&model),
        ["embed_tokens"]
    );
    // `gate` is compared as a whole segment: `shared_expert_gate` and `gate_proj` do not collide.
    assert_eq!(moduletree::find_all_router_modules(&model), ["gate"]);
    assert_schema_agrees(&model, &Qwen2Moe::SCHEMA);
    // The routed experts alone, told apart from the shared expert's identical projections.
    let routed = moduletree::find_layers(&model, |node| node.is_layer() && node.is_expert());
    assert_eq!(
        routed,
        [
            "experts.<>.gate_proj",
            "experts.<>.up_proj",
            "experts.<>.down_proj"
        ]
    );
}

#[test]
fn qwen2_moe_set_linear_is_expert_skips_the_shared_expert() {
    let mut model = qwen2_moe(3, 2, &[1]);
    let marked = moduletree::set_linear_is_expert(&mut model);
    assert_eq!(
        marked,
        [
            "model.layers.0.mlp.experts.0.gate_proj",
            "model.layers.0.mlp.experts.0.up_proj",
            "model.layers.0.mlp.experts.0.down_proj",
            "model.layers.0.mlp.experts.1.gate_proj",
            "model.layers.0.mlp.experts.1.up_proj",
            "model.layers.0.mlp.experts.1.down_proj",
            "model.layers.2.mlp.experts.0.gate_proj",
            "model.layers.2.mlp.experts.0.up_proj",
            "model.layers.2.mlp.experts.0.down_proj",
            "model.layers.2.mlp.experts.1.gate_proj",
            "model.layers.2.mlp.experts.1.up_proj",
            "model.layers.2.mlp.experts.1.down_proj",
        ]
    );
    let mut sparse_layers = 0;
    for layer in &model.model.layers {
        match &layer.mlp {
            Qwen2MoeMlp::Sparse(block) => {
                sparse_layers += 1;
                for expert in &block.experts {
                    assert!(expert.gate_proj.is_expert);
                    assert!(expert.up_proj.is_expert);
                    assert!(expert.down_proj.is_expert);
                }
                let shared = &block.shared_expert;
                assert!(!shared.gate_proj.is_expert && !shared.up_proj.is_expert);
                assert!(!shared.down_proj.is_expert);
                assert!(!block.shared_expert_gate.is_expert);
                assert!(!block.gate.is_expert);
            }
            Qwen2MoeMlp::Dense(mlp) => {
                assert!(!mlp.gate_proj.is_expert && !mlp.up_proj.is_expert);
                assert!(!mlp.down_proj.is_expert);
            }
        }
        assert!(!layer.self_attn.q_proj.is_expert);
    }
    assert_eq!(sparse_layers, 2);
}

// ---------------------------------------------------------------- DeepSeek-V3

/// Layer 0 dense, layer 1 MoE with two routed experts as a `Vec`.
const DEEPSEEK_V3: &str = "
    = ForCausalLm
    model = Decoder
    model.embed_tokens = Embedding embedding
    model.layers = Vec
    model.layers.0 = DeepseekDecoderLayer
    model.layers.0.self_attn = MlaAttention
    model.layers.0.self_attn.q_a_proj = Linear linear
    model.layers.0.self_attn.q_a_layernorm = RmsNorm norm
    model.layers.0.self_attn.q_b_proj = Linear linear
    model.layers.0.self_attn.kv_a_proj_with_mqa = Linear linear
    model.layers.0.self_attn.kv_a_layernorm = RmsNorm norm
    model.layers.0.self_attn.kv_b_proj = Linear linear
    model.layers.0.self_attn.o_proj = Linear linear
    model.layers.0.mlp = Mlp
    model.layers.0.mlp.gate_proj = Linear linear
    model.layers.0.mlp.up_proj = Linear linear
    model.layers.0.mlp.down_proj = Linear linear
    model.layers.0.input_layernorm = RmsNorm norm
    model.layers.0.post_attention_layernorm = RmsNorm norm
    model.layers.1 = DeepseekDecoderLayer
    model.layers.1.self_attn = MlaAttention
    model.layers.1.self_attn.q_a_proj = Linear linear
    model.layers.1.self_attn.q_a_layernorm = RmsNorm norm
    model.layers.1.self_attn.q_b_proj = Linear linear
    model.layers.1.self_attn.kv_a_proj_with_mqa = Linear linear
    model.layers.1.self_attn.kv_a_layernorm = RmsNorm norm
    model.layers.1.self_attn.kv_b_proj = Linear linear
    model.layers.1.self_attn.o_proj = Linear linear
    model.layers.1.mlp = DeepseekMoe
    model.layers.1.mlp.experts = Vec expert
    model.layers.1.mlp.experts.0 = Mlp expert
    model.layers.1.mlp.experts.0.gate_proj = Linear linear expert
    model.layers.1.mlp.experts.0.up_proj = Linear linear expert
    model.layers.1.mlp.experts.0.down_proj = Linear linear expert
    model.layers.1.mlp.experts.1 = Mlp expert
    model.layers.1.mlp.experts.1.gate_proj = Linear linear expert
    model.layers.1.mlp.experts.1.up_proj = Linear linear expert
    model.layers.1.mlp.experts.1.down_proj = Linear linear expert
    model.layers.1.mlp.gate = TopkRouter router
    model.layers.1.mlp.shared_experts = Mlp
    model.layers.1.mlp.shared_experts.gate_proj = Linear linear
    model.layers.1.mlp.shared_experts.up_proj = Linear linear
    model.layers.1.mlp.shared_experts.down_proj = Linear linear
    model.layers.1.input_layernorm = RmsNorm norm
    model.layers.1.post_attention_layernorm = RmsNorm norm
    model.norm = RmsNorm norm
    lm_head = Linear linear head
";

/// The MoE layer of the fused variant: the experts are two `grouped_linear` leaves.
const DEEPSEEK_V3_FUSED_MLP: &str = "
    model.layers.1.mlp = DeepseekFusedMoe
    model.layers.1.mlp.experts = FusedExperts
    model.layers.1.mlp.experts.gate_up_proj = Linear grouped_linear expert
    model.layers.1.mlp.experts.down_proj = Linear grouped_linear expert
    model.layers.1.mlp.gate = TopkRouter router
    model.layers.1.mlp.shared_experts = Mlp
    model.layers.1.mlp.shared_experts.gate_proj = Linear linear
    model.layers.1.mlp.shared_experts.up_proj = Linear linear
    model.layers.1.mlp.shared_experts.down_proj = Linear linear
";

const MLA_AND_MLP: [&str; 8] = [
    "q_a_proj",
    "q_b_proj",
    "kv_a_proj_with_mqa",
    "kv_b_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

#[test]
fn deepseek_v3_named_modules() {
    assert_tree(&deepseek_v3(2, 1, 2, false), DEEPSEEK_V3);
}

#[test]
fn deepseek_v3_fused_named_modules() {
    let modules = describe(&moduletree::named_modules(&deepseek_v3(2, 1, 2, true)));
    let fused = lines(DEEPSEEK_V3_FUSED_MLP);
    let start = modules
        .iter()
        .position(|line| line.starts_with("model.layers.1.mlp "))
        .unwrap();
    assert_eq!(modules[start..start + fused.len()], fused[..]);
    assert_eq!(
        modules[start + fused.len()],
        "model.layers.1.input_layernorm = RmsNorm norm"
    );
    // Everything outside the MoE block is as in the `Vec` variant.
    let unfused = describe(&moduletree::named_modules(&deepseek_v3(2, 1, 2, false)));
    let unfused_start = unfused
        .iter()
        .position(|line| line.starts_with("model.layers.1.mlp "))
        .unwrap();
    assert_eq!(modules[..start], unfused[..unfused_start]);
    assert_eq!(
        modules[start + fused.len()..],
        unfused[unfused_start + 15..],
        "the `Vec` MoE block is 15 nodes"
    );
}

#[test]
fn deepseek_v3_reference_functions() {
    let model = deepseek_v3(2, 1, 2, false);
    assert_eq!(moduletree::find_all_linear_modules(&model), MLA_AND_MLP);
    assert_eq!(
        moduletree::find_all_embedding_modules(&model),
        ["embed_tokens"]
    );
    assert_eq!(moduletree::find_all_router_modules(&model), ["gate"]);

    let fused = deepseek_v3(2, 1, 2, true);
    let mut expected = MLA_AND_MLP.to_vec();
    expected.push("gate_up_proj");
    assert_eq!(moduletree::find_all_linear_modules(&fused), expected);
    assert_eq!(moduletree::find_all_router_modules(&fused), ["gate"]);
    // The fused experts and the `Vec` experts' `down_proj` are told apart from the dense one.
    let experts = moduletree::find_layers(&fused, |node| node.is_layer() && node.is_expert());
    assert_eq!(experts, ["gate_up_proj", "experts.down_proj"]);
}

#[test]
fn deepseek_v3_static_schema_agrees_with_an_instance_taking_every_variant() {
    let mut model = deepseek_v3(3, 1, 2, false);
    let fused = deepseek_v3(3, 1, 2, true);
    model.model.layers[2].mlp = fused.model.layers[2].mlp.clone();
    assert!(matches!(model.model.layers[0].mlp, DeepseekMlp::Dense(_)));
    assert!(matches!(model.model.layers[1].mlp, DeepseekMlp::Moe(_)));
    assert!(matches!(model.model.layers[2].mlp, DeepseekMlp::Fused(_)));
    assert_schema_agrees(&model, &DeepseekV3::SCHEMA);
    let mut expected = MLA_AND_MLP.to_vec();
    expected.push("gate_up_proj");
    assert_eq!(
        moduletree::find_all_linear_modules(&DeepseekV3::SCHEMA),
        expected
    );
}

#[test]
fn deepseek_v3_set_linear_is_expert() {
    let mut model = deepseek_v3(3, 1, 2, false);
    let marked = moduletree::set_linear_is_expert(&mut model);
    let mut expected = Vec::new();
    for layer in 1..3 {
        for expert in 0..2 {
            for proj in ["gate_proj", "up_proj", "down_proj"] {
                expected.push(format!("model.layers.{layer}.mlp.experts.{expert}.{proj}"));
            }
        }
    }
    assert_eq!(marked, expected);
    for (index, layer) in model.model.layers.iter().enumerate() {
        let attention = &layer.self_attn;
        for linear in [
            &attention.q_a_proj,
            &attention.q_b_proj,
            &attention.kv_a_proj_with_mqa,
            &attention.kv_b_proj,
            &attention.o_proj,
        ] {
            assert!(!linear.is_expert);
        }
        match &layer.mlp {
            DeepseekMlp::Dense(mlp) => {
                assert_eq!(index, 0);
                assert!(!mlp.gate_proj.is_expert && !mlp.up_proj.is_expert);
                assert!(!mlp.down_proj.is_expert);
            }
            DeepseekMlp::Moe(moe) => {
                for expert in &moe.experts {
                    assert!(expert.gate_proj.is_expert && expert.up_proj.is_expert);
                    assert!(expert.down_proj.is_expert);
                }
                let shared = &moe.shared_experts;
                assert!(!shared.gate_proj.is_expert && !shared.up_proj.is_expert);
                assert!(!shared.down_proj.is_expert);
            }
            DeepseekMlp::Fused(_) => unreachable!("built without fused experts"),
        }
    }

    // Fused experts are `grouped_linear`, always experts.
    let mut fused = deepseek_v3(2, 1, 2, true);
    assert_eq!(
        moduletree::set_linear_is_expert(&mut fused),
        [
            "model.layers.1.mlp.experts.gate_up_proj",
            "model.layers.1.mlp.experts.down_proj",
        ]
    );
}
