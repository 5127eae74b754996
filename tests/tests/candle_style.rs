//! Model code written the way candle-transformers writes it (our own copies, not its crate):
//! tracing wrappers with private fields, caches, `Arc`s, enums, generic wrappers and a
//! `Vec<Box<dyn Block>>`. With at most one attribute per renamed or role-carrying field (plus
//! `#[tree(skip)]` on fields that hold no layers), each tree's layer paths are exactly the tensor
//! names of the Hugging Face checkpoints in `fixtures/` (minus `.weight`), and each display is
//! pinned as a snapshot (`UPDATE_SNAPSHOTS=1` rewrites them).
#![cfg(feature = "candle")]
#![allow(
    dead_code,
    reason = "the models hold what candle-transformers' hold, most of it unread"
)]

mod fixture_common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fixture_common::assert_snapshot;

use candle_core::{DType, Device, Tensor};
use moduletree::candle::LoraLinear;
use moduletree::{Kind, ModuleTree, delegate_layer};

/// A `tracing::Span` stand-in: not a module.
struct Span(&'static str);

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

/// candle-transformers' `with_tracing::Linear`: a private inner layer and a span.
struct TracedLinear {
    inner: LoraLinear,
    span: Span,
}

delegate_layer!(TracedLinear => inner, Kind::Linear);

fn linear() -> TracedLinear {
    TracedLinear {
        inner: LoraLinear::new(candle_nn::Linear::new(zeros(&[2, 2]), None)),
        span: Span("linear"),
    }
}

/// `with_tracing::RmsNorm`, a tuple struct.
struct TracedNorm(candle_nn::RmsNorm, Span);

delegate_layer!(TracedNorm => 0, Kind::Norm);

fn norm() -> TracedNorm {
    TracedNorm(candle_nn::RmsNorm::new(zeros(&[2]), 1e-6), Span("norm"))
}

/// The layer paths of `model`, sorted.
fn layer_paths(model: &impl ModuleTree) -> Vec<String> {
    let mut paths = Vec::new();
    moduletree::walk(model, |node| {
        if node.is_layer() {
            paths.push(node.path().to_string());
        }
    });
    paths.sort();
    paths
}

/// The modules a Hugging Face checkpoint holds weights of: its tensor names without `.weight` /
/// `.bias`, sorted.
fn checkpoint_modules(dir: &str) -> Vec<String> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "fixtures",
        dir,
        "model.safetensors",
    ]
    .iter()
    .collect();
    let header = moduletree::checkpoint::read_header(&path).unwrap();
    let modules: BTreeSet<String> = header
        .tensors
        .iter()
        .filter_map(|tensor| {
            let name = tensor.name.as_str();
            name.strip_suffix(".weight")
                .or_else(|| name.strip_suffix(".bias"))
                .map(str::to_owned)
        })
        .collect();
    modules.into_iter().collect()
}

mod llama {
    //! candle-transformers' `models/llama.rs`, its field names and private state.
    use super::*;

    pub struct Cache {
        masks: Arc<Mutex<HashMap<usize, Tensor>>>,
        pub use_kv_cache: bool,
        kvs: Vec<Option<(Tensor, Tensor)>>,
        cos: Tensor,
        sin: Tensor,
        device: Device,
    }

    #[derive(ModuleTree)]
    pub struct CausalSelfAttention {
        q_proj: TracedLinear,
        k_proj: TracedLinear,
        v_proj: TracedLinear,
        o_proj: TracedLinear,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        head_dim: usize,
        use_flash_attn: bool,
        #[tree(skip)]
        span: Span,
        #[tree(skip)]
        span_rot: Span,
        max_position_embeddings: usize,
    }

    #[derive(ModuleTree)]
    pub struct Mlp {
        #[tree(rename = "gate_proj")]
        c_fc1: TracedLinear,
        #[tree(rename = "up_proj")]
        c_fc2: TracedLinear,
        #[tree(rename = "down_proj")]
        c_proj: TracedLinear,
        #[tree(skip)]
        span: Span,
    }

    #[derive(ModuleTree)]
    pub struct Block {
        #[tree(rename = "input_layernorm")]
        rms_1: TracedNorm,
        #[tree(rename = "self_attn")]
        attn: CausalSelfAttention,
        #[tree(rename = "post_attention_layernorm")]
        rms_2: TracedNorm,
        mlp: Mlp,
        #[tree(skip)]
        span: Span,
    }

    #[derive(ModuleTree)]
    pub struct Llama {
        // The head comes first, as in candle-transformers; the display still nests by path.
        #[layer(head)]
        lm_head: TracedLinear,
        #[tree(rename = "model.embed_tokens")]
        wte: candle_nn::Embedding,
        #[tree(rename = "model.layers")]
        blocks: Vec<Block>,
        #[tree(rename = "model.norm")]
        ln_f: TracedNorm,
        #[tree(skip)]
        cache: Cache,
    }

    pub fn build(layers: usize) -> Llama {
        let attn = || CausalSelfAttention {
            q_proj: linear(),
            k_proj: linear(),
            v_proj: linear(),
            o_proj: linear(),
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 4,
            use_flash_attn: false,
            span: Span("attn"),
            span_rot: Span("rot"),
            max_position_embeddings: 64,
        };
        Llama {
            lm_head: linear(),
            wte: candle_nn::Embedding::new(zeros(&[4, 2]), 2),
            blocks: (0..layers)
                .map(|_| Block {
                    rms_1: norm(),
                    attn: attn(),
                    rms_2: norm(),
                    mlp: Mlp {
                        c_fc1: linear(),
                        c_fc2: linear(),
                        c_proj: linear(),
                        span: Span("mlp"),
                    },
                    span: Span("block"),
                })
                .collect(),
            ln_f: norm(),
            cache: Cache {
                masks: Arc::new(Mutex::new(HashMap::new())),
                use_kv_cache: true,
                kvs: vec![None; layers],
                cos: zeros(&[1]),
                sin: zeros(&[1]),
                device: Device::Cpu,
            },
        }
    }
}

mod mixtral {
    //! candle-transformers' `models/mixtral.rs`: a rotary embedding behind an `Arc`, a key-value
    //! cache of tensors in each attention, experts in a `Vec`.
    use super::*;

    pub struct RotaryEmbedding {
        sin: Tensor,
        cos: Tensor,
    }

    #[derive(ModuleTree)]
    pub struct Attention {
        q_proj: TracedLinear,
        k_proj: TracedLinear,
        v_proj: TracedLinear,
        o_proj: TracedLinear,
        num_heads: usize,
        #[tree(skip)]
        rotary_emb: Arc<RotaryEmbedding>,
        kv_cache: Option<(Tensor, Tensor)>,
    }

    #[derive(ModuleTree)]
    pub struct BlockSparseTop2Mlp {
        w1: TracedLinear,
        w2: TracedLinear,
        w3: TracedLinear,
        #[tree(skip)]
        act_fn: candle_nn::Activation,
    }

    #[derive(ModuleTree)]
    pub struct SparseMoeBlock {
        #[layer(router)]
        gate: TracedLinear,
        #[expert]
        experts: Vec<BlockSparseTop2Mlp>,
        num_experts_per_tok: usize,
    }

    #[derive(ModuleTree)]
    pub struct DecoderLayer {
        self_attn: Attention,
        block_sparse_moe: SparseMoeBlock,
        input_layernorm: TracedNorm,
        post_attention_layernorm: TracedNorm,
    }

    #[derive(ModuleTree)]
    pub struct Model {
        #[tree(rename = "model.embed_tokens")]
        embed_tokens: candle_nn::Embedding,
        #[tree(rename = "model.layers")]
        layers: Vec<DecoderLayer>,
        #[tree(rename = "model.norm")]
        norm: TracedNorm,
        #[layer(head)]
        lm_head: TracedLinear,
        sliding_window: usize,
        #[tree(skip)]
        device: Device,
        #[tree(skip)]
        dtype: DType,
    }

    pub fn build(layers: usize, experts: usize) -> Model {
        let rotary = Arc::new(RotaryEmbedding {
            sin: zeros(&[1]),
            cos: zeros(&[1]),
        });
        Model {
            embed_tokens: candle_nn::Embedding::new(zeros(&[4, 2]), 2),
            layers: (0..layers)
                .map(|_| DecoderLayer {
                    self_attn: Attention {
                        q_proj: linear(),
                        k_proj: linear(),
                        v_proj: linear(),
                        o_proj: linear(),
                        num_heads: 4,
                        rotary_emb: Arc::clone(&rotary),
                        kv_cache: Some((zeros(&[1]), zeros(&[1]))),
                    },
                    block_sparse_moe: SparseMoeBlock {
                        gate: linear(),
                        experts: (0..experts)
                            .map(|_| BlockSparseTop2Mlp {
                                w1: linear(),
                                w2: linear(),
                                w3: linear(),
                                act_fn: candle_nn::Activation::Silu,
                            })
                            .collect(),
                        num_experts_per_tok: 2,
                    },
                    input_layernorm: norm(),
                    post_attention_layernorm: norm(),
                })
                .collect(),
            norm: norm(),
            lm_head: linear(),
            sliding_window: 4096,
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }
}

mod qwen2_moe {
    //! candle-transformers' `models/qwen2_moe.rs`: dense and sparse layers in one enum, a
    //! shared expert beside the routed ones, biased projections.
    use super::*;

    #[derive(ModuleTree)]
    pub struct Mlp {
        gate_proj: TracedLinear,
        up_proj: TracedLinear,
        down_proj: TracedLinear,
    }

    #[derive(ModuleTree)]
    pub struct SparseMoeBlock {
        #[layer(router)]
        gate: TracedLinear,
        #[expert]
        experts: Vec<Mlp>,
        #[expert(shared)]
        shared_expert: Mlp,
        shared_expert_gate: TracedLinear,
        norm_topk_prob: bool,
        num_experts_per_tok: usize,
    }

    #[derive(ModuleTree)]
    #[allow(
        clippy::large_enum_variant,
        reason = "as candle-transformers declares it"
    )]
    pub enum MlpOrMoeBlock {
        Mlp(Mlp),
        MoeBlock(SparseMoeBlock),
    }

    #[derive(ModuleTree)]
    pub struct Attention {
        q_proj: TracedLinear,
        k_proj: TracedLinear,
        v_proj: TracedLinear,
        o_proj: TracedLinear,
        kv_cache: Option<(Tensor, Tensor)>,
    }

    #[derive(ModuleTree)]
    pub struct DecoderLayer {
        self_attn: Attention,
        mlp: MlpOrMoeBlock,
        input_layernorm: TracedNorm,
        post_attention_layernorm: TracedNorm,
    }

    #[derive(ModuleTree)]
    pub struct Model {
        embed_tokens: candle_nn::Embedding,
        layers: Vec<DecoderLayer>,
        norm: TracedNorm,
    }

    #[derive(ModuleTree)]
    pub struct ModelForCausalLm {
        base_model: Model,
        #[layer(head)]
        lm_head: TracedLinear,
    }

    pub fn build(layers: usize, experts: usize) -> ModelForCausalLm {
        let mlp = || Mlp {
            gate_proj: linear(),
            up_proj: linear(),
            down_proj: linear(),
        };
        ModelForCausalLm {
            base_model: Model {
                embed_tokens: candle_nn::Embedding::new(zeros(&[4, 2]), 2),
                layers: (0..layers)
                    .map(|_| DecoderLayer {
                        self_attn: Attention {
                            q_proj: linear(),
                            k_proj: linear(),
                            v_proj: linear(),
                            o_proj: linear(),
                            kv_cache: None,
                        },
                        mlp: MlpOrMoeBlock::MoeBlock(SparseMoeBlock {
                            gate: linear(),
                            experts: (0..experts).map(|_| mlp()).collect(),
                            shared_expert: mlp(),
                            shared_expert_gate: linear(),
                            norm_topk_prob: false,
                            num_experts_per_tok: 2,
                        }),
                        input_layernorm: norm(),
                        post_attention_layernorm: norm(),
                    })
                    .collect(),
                norm: norm(),
            },
            lm_head: linear(),
        }
    }
}

/// candle-transformers names the base model `base_model`; Hugging Face names it `model`.
fn rename_base(model: &qwen2_moe::ModelForCausalLm) -> Vec<String> {
    let mut paths: Vec<String> = layer_paths(model)
        .into_iter()
        .map(|path| match path.strip_prefix("base_model.") {
            Some(rest) => format!("model.{rest}"),
            None => path,
        })
        .collect();
    paths.sort();
    paths
}

#[test]
fn llama_written_like_candle_transformers_reaches_the_checkpoint_names() {
    let model = llama::build(2);
    assert_eq!(layer_paths(&model), checkpoint_modules("llama_tiny/model"));
    assert_eq!(moduletree::find_all_linear_modules(&model).len(), 7);
    assert_snapshot(
        "candle_style_llama.txt",
        &moduletree::display::Tree::of(&model).to_string(),
    );
}

#[test]
fn mixtral_written_like_candle_transformers_reaches_the_checkpoint_names() {
    let model = mixtral::build(2, 4);
    assert_eq!(layer_paths(&model), checkpoint_modules("moe/mixtral/model"));
    assert_eq!(moduletree::find_all_router_modules(&model), ["gate"]);
    let experts = moduletree::find_layers(&model, |node| node.is_expert() && node.is_layer());
    assert_eq!(experts, ["w1", "w2", "w3"]);
    assert_snapshot(
        "candle_style_mixtral.txt",
        &moduletree::display::Tree::of(&model).to_string(),
    );
}

#[test]
fn qwen2_moe_written_like_candle_transformers_reaches_the_checkpoint_names() {
    let model = qwen2_moe::build(2, 4);
    assert_eq!(
        rename_base(&model),
        checkpoint_modules("moe/qwen2_moe/model")
    );
    assert_snapshot(
        "candle_style_qwen2_moe.txt",
        &moduletree::display::Tree::of(&model).to_string(),
    );
}

mod blocks {
    //! A model of trait objects and a generic wrapper that candle-transformers would give a
    //! segment of its own.
    use super::*;

    pub trait Block: moduletree::DynModuleTree {
        fn width(&self) -> usize;
    }

    moduletree::dyn_module_tree!(dyn Block);

    /// A wrapper that adds tracing around any module: flattened, it adds no segment or node.
    #[derive(ModuleTree)]
    pub struct Traced<T> {
        #[tree(flatten)]
        inner: T,
        #[tree(skip)]
        span: Span,
    }

    #[derive(ModuleTree)]
    pub struct Dense {
        up_proj: Traced<TracedLinear>,
        down_proj: Traced<TracedLinear>,
    }

    impl Block for Dense {
        fn width(&self) -> usize {
            2
        }
    }

    #[derive(ModuleTree)]
    pub struct Attention {
        q_proj: TracedLinear,
        o_proj: TracedLinear,
    }

    impl Block for Attention {
        fn width(&self) -> usize {
            1
        }
    }

    #[derive(ModuleTree)]
    pub struct Model {
        layers: Vec<Box<dyn Block>>,
        #[layer(head)]
        lm_head: Traced<TracedLinear>,
    }

    pub fn build() -> Model {
        let traced = || Traced {
            inner: linear(),
            span: Span("traced"),
        };
        Model {
            layers: vec![
                Box::new(Attention {
                    q_proj: linear(),
                    o_proj: linear(),
                }),
                Box::new(Dense {
                    up_proj: traced(),
                    down_proj: traced(),
                }),
            ],
            lm_head: traced(),
        }
    }
}

#[test]
fn trait_objects_and_generic_wrappers_take_no_segment_of_their_own() {
    let model = blocks::build();
    assert_eq!(
        layer_paths(&model),
        [
            "layers.0.o_proj",
            "layers.0.q_proj",
            "layers.1.down_proj",
            "layers.1.up_proj",
            "lm_head",
        ]
    );
    // The head's role reaches through the flattened wrapper to the layer it stands for.
    assert_eq!(
        moduletree::find_all_linear_modules(&model),
        ["q_proj", "o_proj", "up_proj", "down_proj"]
    );
    assert_snapshot(
        "candle_style_blocks.txt",
        &moduletree::display::Tree::of(&model).to_string(),
    );
}

#[test]
fn a_router_behind_a_delegating_wrapper_still_takes_a_merged_adapter() {
    use moduletree::peft::{Adapter, LoraConfig, RawTensor};

    /// A router behind a tracing wrapper, given its role by the field.
    #[derive(ModuleTree)]
    struct Moe {
        #[layer(router)]
        gate: TracedLinear,
    }
    let mut model = Moe { gate: linear() };
    let before = model.gate.inner.base().weight().to_vec2::<f32>().unwrap();
    let config = LoraConfig::new(1, 1.0).with_target_modules(["gate"]);
    let tensors = [
        (
            "base_model.model.gate.lora_A.weight",
            vec![1, 2],
            vec![1.0, 2.0],
        ),
        (
            "base_model.model.gate.lora_B.weight",
            vec![2, 1],
            vec![0.5, -1.0],
        ),
    ]
    .into_iter()
    .map(|(name, shape, values)| (name.to_owned(), RawTensor::from_f32(shape, &values)))
    .collect();
    let adapter = Adapter::new(config, tensors, "adapter_config.json".into()).unwrap();
    moduletree::candle::load_adapter(
        &mut model,
        &adapter,
        moduletree::peft::LoadMode::Merge,
        "default",
    )
    .unwrap();
    let after = model.gate.inner.base().weight().to_vec2::<f32>().unwrap();
    // W + B·A: [[0.5, 1.0], [-1.0, -2.0]] added to zeros.
    assert_ne!(before, after);
    assert_eq!(after, [[0.5, 1.0], [-1.0, -2.0]]);
}
mod schema_common;

/// The full static schema of every model type of this file, pinned.
#[test]
fn schemas_are_pinned() {
    let out = schema_common::schemas(&["candle_style"], &[]);
    assert_snapshot("schemas/candle_style.txt", &out);
}
