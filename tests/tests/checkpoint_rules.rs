//! One test per row of the checkpoint kind-inference table (`moduletree::checkpoint::rules`), on
//! generated headers (sparse files: real headers, data sections that are holes), and the rules
//! read from names alone when the shards are absent.

use std::fs::{self};

use moduletree::checkpoint::{Checkpoint, Dtype, Note, Quantization, Rule};
use moduletree::{
    Kind, find_all_embedding_modules, find_all_linear_modules, find_all_router_modules,
};

mod checkpoint_common;
use checkpoint_common::{at, open};

const F32: Dtype = Dtype::F32;

/// The kind, type name and row of the layer at `path`.
fn layer(checkpoint: &Checkpoint, path: &str) -> (Option<Kind>, &'static str, Option<Rule>) {
    let module = at(checkpoint, path);
    (module.info().kind(), module.info().type_name, module.rule())
}

#[test]
fn fused_experts_are_banks_at_the_parameter_path() {
    let (_dir, checkpoint) = open(
        &[
            ("model.layers.0.mlp.experts.gate_up_proj", F32, &[4, 32, 16]),
            (
                "model.layers.0.mlp.experts.gate_up_proj_bias",
                F32,
                &[4, 32],
            ),
            ("model.layers.0.mlp.experts.down_proj", F32, &[4, 16, 16]),
            ("model.layers.0.mlp.router.weight", F32, &[4, 16]),
            ("model.layers.0.self_attn.q_proj.weight", F32, &[16, 16]),
        ],
        None,
    );
    assert_eq!(
        layer(&checkpoint, "model.layers.0.mlp.experts.gate_up_proj"),
        (
            Some(Kind::GroupedLinear),
            "GroupedLinear",
            Some(Rule::FusedExperts)
        )
    );
    let bank = at(&checkpoint, "model.layers.0.mlp.experts.gate_up_proj");
    assert_eq!(
        bank.parameter_names().collect::<Vec<_>>(),
        ["gate_up_proj", "gate_up_proj_bias"]
    );
    assert_eq!(
        layer(&checkpoint, "model.layers.0.mlp.router").0,
        Some(Kind::Router)
    );
    let summary = checkpoint.summary();
    // transformers' registration order: `gate_up_proj` before `down_proj`.
    assert_eq!(
        summary.experts,
        [
            "model.layers.<>.mlp.experts.gate_up_proj",
            "model.layers.<>.mlp.experts.down_proj"
        ]
    );
    assert_eq!(summary.router, ["router"]);
    let text = checkpoint.tree().to_string();
    assert!(
        text.contains("gate_up_proj: GroupedLinear(gate_up_proj: F32[4, 32, 16], gate_up_proj_bias: F32[4, 32]) [grouped_linear, expert]"),
        "{text}"
    );
}

#[test]
fn expert_banks_with_an_expert_axis_are_grouped() {
    // GraniteMoE: `input_linear` [E, 2I, H] and `router.layer` beside it.
    let config =
        serde_json::json!({"architectures": ["GraniteMoeForCausalLM"], "num_local_experts": 4});
    let (_dir, checkpoint) = open(
        &[
            (
                "model.layers.0.block_sparse_moe.input_linear.weight",
                F32,
                &[4, 32, 16],
            ),
            (
                "model.layers.0.block_sparse_moe.output_linear.weight",
                F32,
                &[4, 16, 16],
            ),
            (
                "model.layers.0.block_sparse_moe.router.layer.weight",
                F32,
                &[4, 16],
            ),
        ],
        Some(config),
    );
    let moe = "model.layers.0.block_sparse_moe";
    assert_eq!(
        layer(&checkpoint, &format!("{moe}.input_linear")),
        (
            Some(Kind::GroupedLinear),
            "GroupedLinear",
            Some(Rule::ExpertBank)
        )
    );
    assert_eq!(
        layer(&checkpoint, &format!("{moe}.router.layer")),
        (Some(Kind::Router), "Router", Some(Rule::Router))
    );
    let summary = checkpoint.summary();
    assert_eq!(summary.linear, ["input_linear", "output_linear"]);
    assert_eq!(summary.router, ["layer"]);
    assert_eq!(summary.experts.len(), 2);
    assert!(
        !checkpoint.notes().iter().any(Note::is_warning),
        "{:?}",
        checkpoint.notes()
    );
}

#[test]
fn norms_by_name_or_by_a_one_dimensional_weight() {
    let (_dir, checkpoint) = open(
        &[
            ("model.layers.0.input_layernorm.weight", F32, &[16]),
            ("model.layers.0.self_attn.q_norm.weight", F32, &[8]),
            ("encoder.layer.0.output.LayerNorm.weight", F32, &[16]),
            ("encoder.layer.0.output.LayerNorm.bias", F32, &[16]),
            ("transformer.ln_f.weight", F32, &[16]),
            ("transformer.h.0.attn_scale.weight", F32, &[16]),
        ],
        None,
    );
    for path in [
        "model.layers.0.input_layernorm",
        "model.layers.0.self_attn.q_norm",
        "encoder.layer.0.output.LayerNorm",
        "transformer.ln_f",
        "transformer.h.0.attn_scale",
    ] {
        assert_eq!(
            layer(&checkpoint, path),
            (Some(Kind::Norm), "Norm", Some(Rule::Norm)),
            "{path}"
        );
    }
    assert!(find_all_linear_modules(&checkpoint).is_empty());
}

#[test]
fn convolutions_by_kernel_rank() {
    let (_dir, checkpoint) = open(
        &[
            (
                "vision.embeddings.patch_embedding.weight",
                F32,
                &[8, 3, 4, 4],
            ),
            ("vision.embeddings.patch_embedding.bias", F32, &[8]),
            ("visual.patch_embed.proj.weight", F32, &[8, 3, 2, 4, 4]),
            ("model.layers.0.linear_attn.conv1d.weight", F32, &[16, 1, 4]),
        ],
        None,
    );
    assert_eq!(
        layer(&checkpoint, "vision.embeddings.patch_embedding"),
        (Some(Kind::Conv), "Conv2d", Some(Rule::Conv))
    );
    assert_eq!(
        layer(&checkpoint, "visual.patch_embed.proj"),
        (Some(Kind::Conv), "Conv3d", Some(Rule::Conv))
    );
    assert_eq!(
        layer(&checkpoint, "model.layers.0.linear_attn.conv1d"),
        (Some(Kind::Conv), "Conv1d", Some(Rule::Conv))
    );
    assert!(find_all_linear_modules(&checkpoint).is_empty());
}

#[test]
fn heads_by_name() {
    let (_dir, checkpoint) = open(
        &[
            ("lm_head.weight", F32, &[64, 16]),
            ("gpt_neox.embed_out.weight", F32, &[64, 16]),
            ("model.transformer.ff_out.weight", F32, &[64, 16]),
            ("model.transformer.blocks.0.ff_out.weight", F32, &[16, 32]),
            ("output.weight", F32, &[64, 16]),
            ("model.layers.61.shared_head.head.weight", F32, &[64, 16]),
        ],
        None,
    );
    for path in [
        "lm_head",
        "gpt_neox.embed_out",
        "model.transformer.ff_out",
        "output",
        "model.layers.61.shared_head.head",
    ] {
        let module = at(&checkpoint, path);
        assert!(module.info().head, "{path}");
        assert_eq!(module.rule(), Some(Rule::Head), "{path}");
    }
    // Inside the repeated blocks, OLMo's `ff_out` is the MLP's output projection.
    assert!(
        !at(&checkpoint, "model.transformer.blocks.0.ff_out")
            .info()
            .head
    );
    assert_eq!(find_all_linear_modules(&checkpoint), ["blocks.<>.ff_out"]);
    assert!(find_all_embedding_modules(&checkpoint).is_empty());
}

#[test]
fn embeddings_by_name_and_by_an_embedding_tensor() {
    let (_dir, checkpoint) = open(
        &[
            ("transformer.wte.weight", F32, &[64, 16]),
            ("transformer.wpe.weight", F32, &[32, 16]),
            ("model.transformer.wte.embedding", F32, &[64, 16]),
            ("model.transformer.wte.new_embedding", F32, &[8, 16]),
            ("bloom.word_embeddings.weight", F32, &[64, 16]),
            ("bloom.word_embeddings_layernorm.weight", F32, &[16]),
            ("llama.tok_embeddings.weight", F32, &[64, 16]),
            ("model.embed_tokens.weight", F32, &[64, 16]),
        ],
        None,
    );
    for path in [
        "transformer.wte",
        "transformer.wpe",
        "model.transformer.wte",
        "bloom.word_embeddings",
        "llama.tok_embeddings",
        "model.embed_tokens",
    ] {
        assert_eq!(
            layer(&checkpoint, path),
            (Some(Kind::Embedding), "Embedding", Some(Rule::Embedding)),
            "{path}"
        );
    }
    assert_eq!(
        layer(&checkpoint, "bloom.word_embeddings_layernorm").0,
        Some(Kind::Norm)
    );
    assert_eq!(
        find_all_embedding_modules(&checkpoint),
        [
            "word_embeddings",
            "tok_embeddings",
            "embed_tokens",
            "wte",
            "wpe"
        ]
    );
}

#[test]
fn routers_beside_experts_only() {
    let (_dir, checkpoint) = open(
        &[
            ("model.layers.0.block_sparse_moe.gate.weight", F32, &[4, 16]),
            (
                "model.layers.0.block_sparse_moe.experts.0.w1.weight",
                F32,
                &[32, 16],
            ),
            (
                "model.layers.0.block_sparse_moe.experts.1.w1.weight",
                F32,
                &[32, 16],
            ),
            ("model.layers.0.mlp.gate.weight", F32, &[32, 16]),
            ("model.layers.0.mlp.router.weight", F32, &[32, 16]),
        ],
        None,
    );
    assert_eq!(
        layer(&checkpoint, "model.layers.0.block_sparse_moe.gate").0,
        Some(Kind::Router)
    );
    // Without an expert sibling, `gate` and `router` are projections.
    assert_eq!(
        layer(&checkpoint, "model.layers.0.mlp.gate").0,
        Some(Kind::Linear)
    );
    assert_eq!(
        layer(&checkpoint, "model.layers.0.mlp.router").0,
        Some(Kind::Linear)
    );
    assert_eq!(
        find_all_router_modules(&checkpoint),
        ["block_sparse_moe.gate"]
    );
}

#[test]
fn layernorm_linears_by_their_norm_weight() {
    let (_dir, checkpoint) = open(
        &[
            (
                "decoder.layers.0.self_attention.linear_qkv.weight",
                F32,
                &[48, 16],
            ),
            (
                "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight",
                F32,
                &[16],
            ),
        ],
        None,
    );
    assert_eq!(
        layer(&checkpoint, "decoder.layers.0.self_attention.linear_qkv"),
        (
            Some(Kind::LayernormLinear),
            "LayerNormLinear",
            Some(Rule::LayernormLinear)
        )
    );
    assert_eq!(find_all_linear_modules(&checkpoint), ["linear_qkv"]);
}

/// Each quantized layout: a linear (not a module with a child `weight`), its layout in the API
/// and in the display, and in `all-linear`.
#[test]
fn quantized_linears_by_their_companion_tensors() {
    type Layout = (
        &'static str,
        Quantization,
        &'static str,
        Vec<(&'static str, Dtype, Vec<u64>)>,
    );
    let layouts: [Layout; 7] = [
        (
            "bnb4",
            Quantization::Bnb4bit,
            "Linear4bit",
            vec![
                ("weight", Dtype::U8, vec![256, 1]),
                ("weight.absmax", F32, vec![8]),
                ("weight.quant_map", F32, vec![16]),
                ("weight.quant_state.bitsandbytes__nf4", Dtype::U8, vec![100]),
            ],
        ),
        (
            "bnb8",
            Quantization::Bnb8bit,
            "Linear8bitLt",
            vec![
                ("weight", Dtype::I8, vec![32, 16]),
                ("SCB", F32, vec![32]),
                ("weight_format", Dtype::U8, vec![]),
            ],
        ),
        (
            "gptq",
            Quantization::Gptq,
            "QuantLinear",
            vec![
                ("qweight", Dtype::I32, vec![2, 32]),
                ("qzeros", Dtype::I32, vec![1, 4]),
                ("scales", Dtype::F16, vec![1, 32]),
                ("g_idx", Dtype::I32, vec![16]),
            ],
        ),
        (
            "awq",
            Quantization::Awq,
            "WQLinear",
            vec![
                ("qweight", Dtype::I32, vec![16, 4]),
                ("qzeros", Dtype::I32, vec![1, 4]),
                ("scales", Dtype::F16, vec![1, 32]),
            ],
        ),
        (
            "fp8",
            Quantization::Fp8,
            "FP8Linear",
            vec![
                ("weight", Dtype::F8_E4M3, vec![32, 16]),
                ("weight_scale_inv", F32, vec![1, 1]),
            ],
        ),
        (
            "mlx",
            Quantization::Mlx,
            "QuantizedLinear",
            vec![
                ("weight", Dtype::U32, vec![32, 2]),
                ("scales", Dtype::BF16, vec![32, 1]),
                ("biases", Dtype::BF16, vec![32, 1]),
            ],
        ),
        (
            "compressed",
            Quantization::CompressedTensors,
            "CompressedLinear",
            vec![
                ("weight_packed", Dtype::I32, vec![32, 2]),
                ("weight_scale", Dtype::BF16, vec![32, 1]),
                ("weight_shape", Dtype::I64, vec![2]),
            ],
        ),
    ];
    for (label, quantization, type_name, tensors) in layouts {
        let names: Vec<(String, Dtype, Vec<u64>)> = tensors
            .iter()
            .map(|(name, dtype, shape)| {
                (
                    format!("model.layers.0.self_attn.q_proj.{name}"),
                    *dtype,
                    shape.clone(),
                )
            })
            .chain([(
                "model.layers.0.input_layernorm.weight".to_owned(),
                F32,
                vec![16],
            )])
            .collect();
        let refs: Vec<(&str, Dtype, &[u64])> = names
            .iter()
            .map(|(name, dtype, shape)| (name.as_str(), *dtype, shape.as_slice()))
            .collect();
        let (_dir, checkpoint) = open(&refs, None);
        let module = at(&checkpoint, "model.layers.0.self_attn.q_proj");
        assert_eq!(module.quantization(), Some(quantization), "{label}");
        assert_eq!(
            (module.info().kind(), module.info().type_name, module.rule()),
            (Some(Kind::Linear), type_name, Some(Rule::Linear)),
            "{label}"
        );
        assert!(module.child("weight").is_none(), "{label}");
        assert_eq!(find_all_linear_modules(&checkpoint), ["q_proj"], "{label}");
        let text = checkpoint.tree().to_string();
        assert!(
            text.contains(&format!("q_proj: {type_name}({}", quantization.name())),
            "{label}: {text}"
        );
    }
}

#[test]
fn the_last_projection_of_vocabulary_size_is_the_head() {
    let tensors: [(&str, Dtype, &[u64]); 4] = [
        ("model.embed_tokens.weight", F32, &[64, 16]),
        ("model.layers.0.mlp.up_proj.weight", F32, &[64, 16]),
        ("model.proj_out.weight", F32, &[64, 16]),
        ("model.norm.weight", F32, &[16]),
    ];
    // The vocabulary from `config.json`, or else from the embedding's rows.
    for config in [
        Some(serde_json::json!({"vocab_size": 64, "tie_word_embeddings": false})),
        None,
    ] {
        let (_dir, checkpoint) = open(&tensors, config.clone());
        let head = at(&checkpoint, "model.proj_out");
        assert!(head.info().head, "{config:?}");
        assert_eq!(head.rule(), Some(Rule::VocabHead));
        assert!(!at(&checkpoint, "model.layers.0.mlp.up_proj").info().head);
        assert_eq!(find_all_linear_modules(&checkpoint), ["up_proj"]);
    }
}

#[test]
fn tied_embeddings_come_from_config() {
    let tensors: [(&str, Dtype, &[u64]); 2] = [
        ("model.embed_tokens.weight", F32, &[64, 16]),
        ("model.layers.0.mlp.up_proj.weight", F32, &[32, 16]),
    ];
    let (_dir, tied) = open(
        &tensors,
        Some(serde_json::json!({"tie_word_embeddings": true})),
    );
    assert_eq!(tied.tied_embedding(), Some("model.embed_tokens"));
    assert!(tied.notes().contains(&Note::TiedEmbeddings {
        embedding: "model.embed_tokens".to_owned()
    }));
    // transformers' default when the key is absent.
    let (_dir, default) = open(&tensors, Some(serde_json::json!({"vocab_size": 64})));
    assert_eq!(default.tied_embedding(), Some("model.embed_tokens"));
    let (_dir, untied) = open(
        &tensors,
        Some(serde_json::json!({"tie_word_embeddings": false})),
    );
    assert_eq!(untied.tied_embedding(), None);
    let (_dir, unknown) = open(&tensors, None);
    assert_eq!(unknown.tied_embedding(), None);
    assert!(matches!(unknown.notes(), [Note::NoConfig { .. }]));
}

#[test]
fn config_disagreements_are_noted() {
    let config =
        serde_json::json!({"num_local_experts": 8, "quantization_config": {"quant_method": "awq"}});
    let (_dir, checkpoint) = open(
        &[
            ("model.layers.0.mlp.gate.weight", F32, &[4, 16]),
            (
                "model.layers.0.mlp.experts.3.up_proj.weight",
                F32,
                &[32, 16],
            ),
        ],
        Some(config),
    );
    let notes: Vec<String> = checkpoint.notes().iter().map(ToString::to_string).collect();
    assert_eq!(
        notes,
        [
            "config.json: 8 routed experts configured, but `model.layers.0.mlp.experts.3.up_proj` implies 4",
            "config.json: quantization `awq` configured, but no layer has its tensors",
        ]
    );
}

/// With the shards absent, the same rows run on names alone.
#[test]
fn names_alone_give_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "model.embed_tokens.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_proj.qweight",
        "model.layers.0.self_attn.q_proj.qzeros",
        "model.layers.0.self_attn.q_proj.scales",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.mlp.down_proj.weight.absmax",
        "model.layers.0.mlp.down_proj.weight.quant_state.bitsandbytes__nf4",
        "model.layers.0.mlp.experts.gate_up_proj",
        "model.layers.0.mlp.router.weight",
        "model.visual.patch_embed.proj.weight",
        "model.visual.blocks.0.attn.qkv.weight",
        "model.layers.0.linear_attn.conv1d.weight",
        "lm_head.weight",
    ];
    let weight_map: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .map(|name| {
            (
                (*name).to_owned(),
                "model-00001-of-00001.safetensors".into(),
            )
        })
        .collect();
    let index = dir.path().join("model.safetensors.index.json");
    fs::write(
        &index,
        serde_json::json!({"weight_map": weight_map}).to_string(),
    )
    .unwrap();
    let checkpoint = Checkpoint::open(&index).unwrap();
    let expect = [
        ("model.embed_tokens", Kind::Embedding),
        ("model.layers.0.input_layernorm", Kind::Norm),
        ("model.layers.0.self_attn.q_proj", Kind::Linear),
        ("model.layers.0.mlp.down_proj", Kind::Linear),
        (
            "model.layers.0.mlp.experts.gate_up_proj",
            Kind::GroupedLinear,
        ),
        ("model.layers.0.mlp.router", Kind::Router),
        ("model.visual.patch_embed.proj", Kind::Conv),
        ("model.visual.blocks.0.attn.qkv", Kind::Linear),
        ("model.layers.0.linear_attn.conv1d", Kind::Conv),
        ("lm_head", Kind::Linear),
    ];
    for (path, kind) in expect {
        assert_eq!(at(&checkpoint, path).info().kind(), Some(kind), "{path}");
    }
    assert_eq!(
        at(&checkpoint, "model.layers.0.self_attn.q_proj").quantization(),
        Some(Quantization::Awq)
    );
    assert_eq!(
        at(&checkpoint, "model.layers.0.mlp.down_proj").quantization(),
        Some(Quantization::Bnb4bit)
    );
    let text = checkpoint.tree().to_string();
    assert!(
        text.contains("q_proj: WQLinear(awq, qweight: ?, +2 quantization tensors) [linear]"),
        "{text}"
    );
    assert!(matches!(
        checkpoint.notes()[0],
        Note::ShardsAbsent {
            of: 1,
            tensors: 14,
            ..
        }
    ));
    assert_eq!(
        checkpoint
            .towers()
            .iter()
            .map(|tower| tower.path.as_str())
            .collect::<Vec<_>>(),
        ["", "model.visual"]
    );
    assert_eq!(
        checkpoint
            .tower_of("model.visual.blocks.0.attn.qkv")
            .map(|tower| tower.path.as_str()),
        Some("model.visual")
    );
    assert_eq!(
        checkpoint
            .tower_of("model.layers.0.mlp.router")
            .map(|tower| tower.path.as_str()),
        Some("")
    );
}
