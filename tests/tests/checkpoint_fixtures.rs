//! Index-only inspection of real public checkpoints: their `model.safetensors.index.json` and
//! `config.json`, without a single shard (`tests/fixtures/checkpoints/README.md` names the
//! sources). Each test asserts what a user deciding what to fine-tune needs: the `all-linear`
//! names, embeddings, routers, expert layers, quantization, towers and notes.

use std::path::PathBuf;

use moduletree::checkpoint::{Checkpoint, Note, Quantization, Tower, TowerKind};
use moduletree::{find_all_linear_modules, walk};

fn open(name: &str) -> Checkpoint {
    let index = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/checkpoints")
        .join(name)
        .join("model.safetensors.index.json");
    Checkpoint::open(&index).unwrap()
}

/// The linear-family layers that `all-linear` selects (heads excluded), counted.
fn all_linear_count(checkpoint: &Checkpoint) -> usize {
    let mut count = 0;
    walk(checkpoint, |node| {
        if node.kind().is_some_and(moduletree::Kind::is_linear_family) && !node.is_head() {
            count += 1;
        }
    });
    count
}

fn tower(path: &str, kind: TowerKind, layers: usize, blocks: usize) -> Tower {
    Tower {
        path: path.to_owned(),
        kind,
        layers,
        blocks,
    }
}

/// Every fixture opens from its index alone, with one note saying what could not be known.
fn assert_index_only(checkpoint: &Checkpoint, shards: usize, tensors: usize) {
    assert!(checkpoint.files().is_empty());
    assert_eq!(checkpoint.shards().len(), shards);
    assert_eq!(checkpoint.tensors().len(), tensors);
    assert!(
        checkpoint
            .tensors()
            .iter()
            .all(|tensor| tensor.layout.is_none())
    );
    assert!(
        matches!(&checkpoint.notes()[0], Note::ShardsAbsent { of, tensors: absent, .. } if *of == shards && *absent == tensors),
        "{:?}",
        checkpoint.notes()
    );
    assert!(
        !checkpoint.notes().iter().any(Note::is_warning),
        "{:?}",
        checkpoint.notes()
    );
}

#[test]
fn llama_3_1_8b_bitsandbytes_8bit() {
    let checkpoint = open("llama-3.1-8b");
    assert_index_only(&checkpoint, 6, 739);
    let summary = checkpoint.summary();
    assert_eq!(
        summary.linear,
        [
            "down_proj",
            "gate_proj",
            "up_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "v_proj"
        ]
    );
    assert_eq!(summary.embedding, ["embed_tokens"]);
    assert!(summary.router.is_empty() && summary.experts.is_empty());
    assert_eq!(all_linear_count(&checkpoint), 32 * 7);
    let q_proj = checkpoint
        .root()
        .child("model")
        .unwrap()
        .child("layers")
        .unwrap();
    let q_proj = q_proj
        .child("0")
        .unwrap()
        .child("self_attn")
        .unwrap()
        .child("q_proj")
        .unwrap();
    assert_eq!(q_proj.quantization(), Some(Quantization::Bnb8bit));
    assert_eq!(
        checkpoint.config().unwrap().quantization.as_deref(),
        Some("bitsandbytes")
    );
    assert!(checkpoint.root().child("lm_head").unwrap().info().head);
    assert_eq!(
        checkpoint.towers(),
        [tower("", TowerKind::Language, 291, 32)]
    );
    assert_eq!(checkpoint.tied_embedding(), None);
}

#[test]
fn wizardlm_2_8x22b_per_expert_moe() {
    let checkpoint = open("wizardlm-2-8x22b");
    assert_index_only(&checkpoint, 59, 1739);
    let summary = checkpoint.summary();
    assert_eq!(
        summary.linear,
        ["w1", "w2", "w3", "k_proj", "o_proj", "q_proj", "v_proj"]
    );
    assert_eq!(summary.router, ["gate"]);
    assert_eq!(
        summary.experts,
        [
            "model.layers.<>.block_sparse_moe.experts.<>.w1",
            "model.layers.<>.block_sparse_moe.experts.<>.w2",
            "model.layers.<>.block_sparse_moe.experts.<>.w3"
        ]
    );
    // 56 layers × (8 experts × 3 + 4 attention projections).
    assert_eq!(all_linear_count(&checkpoint), 56 * (8 * 3 + 4));
    assert_eq!(checkpoint.config().unwrap().experts, Some(8));
}

#[test]
fn granite_moe_fused_experts() {
    let checkpoint = open("granite-3.1-1b-a400m");
    assert_index_only(&checkpoint, 2, 218);
    let summary = checkpoint.summary();
    assert_eq!(
        find_all_linear_modules(&checkpoint),
        [
            "input_linear",
            "output_linear",
            "k_proj",
            "o_proj",
            "q_proj",
            "v_proj"
        ]
    );
    assert_eq!(summary.router, ["layer"]);
    assert_eq!(
        summary.experts,
        [
            "model.layers.<>.block_sparse_moe.input_linear",
            "model.layers.<>.block_sparse_moe.output_linear"
        ]
    );
    assert!(
        summary
            .tree
            .to_string()
            .contains("input_linear: GroupedLinear(weight: ?) [grouped_linear, expert]")
    );
    // No head tensor: the head is the embedding, tied in config.json.
    assert_eq!(checkpoint.tied_embedding(), Some("model.embed_tokens"));
    assert_eq!(
        checkpoint.towers(),
        [tower("", TowerKind::Language, 24 * 9 + 2, 24)]
    );
}

#[test]
fn molmo_7b_bitsandbytes_4bit_with_a_vision_backbone() {
    let checkpoint = open("molmo-7b-d-nf4");
    assert_index_only(&checkpoint, 2, 921);
    let summary = checkpoint.summary();
    // The language model's 4-bit projections are linears, not modules with a child `weight`;
    // the top-level `ff_out` is the head; `wte.embedding` is the embedding.
    assert_eq!(
        summary.linear,
        [
            "att_proj",
            "attn_out",
            "blocks.<>.ff_out",
            "ff_proj",
            "wk",
            "wo",
            "wq",
            "wv",
            "w1",
            "w2",
            "w3"
        ]
    );
    assert_eq!(summary.embedding, ["wte"]);
    let transformer = checkpoint
        .root()
        .child("model")
        .unwrap()
        .child("transformer")
        .unwrap();
    assert!(transformer.child("ff_out").unwrap().info().head);
    let att_proj = transformer
        .child("blocks")
        .unwrap()
        .child("0")
        .unwrap()
        .child("att_proj")
        .unwrap();
    assert_eq!(att_proj.quantization(), Some(Quantization::Bnb4bit));
    assert!(att_proj.child("weight").is_none());
    assert_eq!(
        checkpoint.towers(),
        [
            tower("", TowerKind::Language, 28 * 6 + 3, 28),
            tower("model.vision_backbone", TowerKind::Vision, 193, 23)
        ]
    );
    assert_eq!(
        checkpoint
            .tower_of("model.transformer.blocks.3.att_proj")
            .unwrap()
            .kind,
        TowerKind::Language
    );
    assert_eq!(
        checkpoint
            .tower_of("model.vision_backbone.image_vit.transformer.resblocks.0.attention.wq")
            .unwrap()
            .kind,
        TowerKind::Vision
    );
    // 4 per language block; the vision tower's own linears come on top.
    assert_eq!(all_linear_count(&checkpoint), 28 * 4 + 4 + 3 + 23 * 6);
}

#[test]
fn medgemma_27b_vision_language() {
    let checkpoint = open("medgemma-27b-it");
    assert_index_only(&checkpoint, 12, 1247);
    let summary = checkpoint.summary();
    assert_eq!(
        summary.linear,
        [
            "down_proj",
            "gate_proj",
            "up_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "v_proj",
            "fc1",
            "fc2",
            "out_proj"
        ]
    );
    assert_eq!(summary.embedding, ["embed_tokens", "position_embedding"]);
    assert_eq!(
        checkpoint.towers(),
        [
            tower("language_model", TowerKind::Language, 62 * 13 + 2, 62),
            tower("multi_modal_projector", TowerKind::Projector, 1, 0),
            tower("vision_tower", TowerKind::Vision, 219, 27),
        ]
    );
    // `q_proj` names 62 language-model layers and 27 vision layers: the towers tell them apart.
    let mut by_tower = std::collections::BTreeMap::new();
    walk(&checkpoint, |node| {
        if node
            .path()
            .segments()
            .last()
            .is_some_and(|segment| segment.to_string() == "q_proj")
        {
            let path = node.path().to_string();
            *by_tower
                .entry(checkpoint.tower_of(&path).unwrap().kind.name())
                .or_insert(0) += 1;
        }
    });
    assert_eq!(by_tower, [("language", 62), ("vision", 27)].into());
    assert_eq!(
        checkpoint.tied_embedding(),
        Some("language_model.model.embed_tokens")
    );
    let vision_conv = checkpoint
        .root()
        .child("vision_tower")
        .unwrap()
        .child("vision_model")
        .unwrap();
    let patch = vision_conv
        .child("embeddings")
        .unwrap()
        .child("patch_embedding")
        .unwrap();
    assert_eq!(patch.info().kind(), Some(moduletree::Kind::Conv));
}

#[test]
fn bloom_without_a_head_tensor() {
    let checkpoint = open("bloom");
    assert_index_only(&checkpoint, 72, 845);
    let summary = checkpoint.summary();
    assert_eq!(
        summary.linear,
        ["dense_4h_to_h", "dense_h_to_4h", "dense", "query_key_value"]
    );
    // `word_embeddings_layernorm` is a norm, not an embedding.
    assert_eq!(summary.embedding, ["word_embeddings"]);
    assert_eq!(checkpoint.tied_embedding(), Some("word_embeddings"));
    assert_eq!(all_linear_count(&checkpoint), 70 * 4);
    assert_eq!(
        checkpoint.towers(),
        [tower("", TowerKind::Language, 70 * 6 + 3, 70)]
    );
}
