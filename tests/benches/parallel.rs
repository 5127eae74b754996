//! Building the parallel plan of a full-size DeepSeek-V3 (61 layers, the first 3 dense, 256
//! routed experts kept one module per expert plus a shared expert, DeepSeek-V3's dimensions) for
//! tp = 8, ep = 16: 47,000 layers placed and their splits checked. The target on the reference
//! machine is under 5 ms.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use moduletree::ModuleTree;
use moduletree::parallel::{ParallelConfig, ParallelPlan};
use moduletree_tests::models::{Embedding, Linear, MlaAttention, RmsNorm};

const HIDDEN: usize = 7168;

#[derive(ModuleTree)]
struct Mlp {
    #[layer(kind = "linear", parallel = "column")]
    gate_proj: Linear,
    #[layer(kind = "linear", parallel = "column")]
    up_proj: Linear,
    #[layer(kind = "linear", parallel = "row")]
    down_proj: Linear,
}

impl Mlp {
    fn new(inner: usize) -> Mlp {
        Mlp {
            gate_proj: Linear::new(HIDDEN, inner),
            up_proj: Linear::new(HIDDEN, inner),
            down_proj: Linear::new(inner, HIDDEN),
        }
    }
}

#[derive(ModuleTree)]
struct Moe {
    #[layer(kind = "router")]
    gate: Linear,
    #[expert]
    experts: Vec<Mlp>,
    #[expert(shared)]
    shared_experts: Mlp,
}

#[derive(ModuleTree)]
enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

#[derive(ModuleTree)]
struct Layer {
    self_attn: MlaAttention,
    mlp: Ffn,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

#[derive(ModuleTree)]
struct Model {
    embed_tokens: Embedding,
    #[tree(layers)]
    layers: Vec<Layer>,
    norm: RmsNorm,
}

#[derive(ModuleTree)]
struct DeepseekV3 {
    model: Model,
    #[layer(kind = "linear", head, parallel = "column_gather")]
    lm_head: Linear,
}

fn deepseek_v3() -> DeepseekV3 {
    let attention = || MlaAttention {
        q_a_proj: Linear::new(HIDDEN, 1536),
        q_a_layernorm: RmsNorm { dim: 1536 },
        q_b_proj: Linear::new(1536, 128 * 192),
        kv_a_proj_with_mqa: Linear::new(HIDDEN, 576),
        kv_a_layernorm: RmsNorm { dim: 512 },
        kv_b_proj: Linear::new(512, 128 * 256),
        o_proj: Linear::new(128 * 128, HIDDEN),
    };
    let layers = (0..61)
        .map(|index| Layer {
            self_attn: attention(),
            mlp: if index < 3 {
                Ffn::Dense(Mlp::new(18432))
            } else {
                Ffn::Moe(Moe {
                    gate: Linear::new(HIDDEN, 256),
                    experts: (0..256).map(|_| Mlp::new(2048)).collect(),
                    shared_experts: Mlp::new(2048),
                })
            },
            input_layernorm: RmsNorm { dim: HIDDEN },
            post_attention_layernorm: RmsNorm { dim: HIDDEN },
        })
        .collect();
    DeepseekV3 {
        model: Model {
            embed_tokens: Embedding {
                vocab: 129_280,
                dim: HIDDEN,
            },
            layers,
            norm: RmsNorm { dim: HIDDEN },
        },
        lm_head: Linear::new(HIDDEN, 129_280),
    }
}

fn bench(c: &mut Criterion) {
    let model = deepseek_v3();
    let shape = |node: &moduletree::Node<'_, '_>| {
        node.downcast_ref::<Linear>()
            .map(|linear| vec![linear.out_features, linear.in_features])
    };
    let config = ParallelConfig::new(8, 16, 1);
    let plan = ParallelPlan::builder(config)
        .sizes(shape)
        .build(&model)
        .expect("the plan divides");
    println!(
        "DeepSeek-V3 plan: {} layers, {} expert lists",
        plan.layers().len(),
        plan.experts().len()
    );
    c.bench_function("parallel_plan/deepseek_v3_tp8_ep16", |b| {
        b.iter(|| {
            ParallelPlan::builder(config)
                .sizes(shape)
                .build(black_box(&model))
                .map(|plan| plan.layers().len())
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
