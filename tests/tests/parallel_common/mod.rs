//! Small transformer models with LoRA attached, shaped as transformers names them (Llama, Mixtral
//! and Qwen2-MoE with fused experts, DeepSeek-V3 with latent attention), one forward written once
//! over an [`Exec`], and two executors: [`Reference`] runs the layers themselves (`LoraLinear`,
//! `LoraEmbedding`, `ExpertBank`), [`Sim`] runs every layer as the ranks of a parallel plan would,
//! each from its own shards, joined only by the collectives the plan names.
#![allow(dead_code, reason = "each test file uses a part")]

pub mod toy;

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Embedding, Linear, Module};
use moduletree::ModuleTree;
use moduletree::candle::{ExpertAdapter, ExpertBank, LoraAdapter, LoraEmbedding, LoraLinear};
use moduletree::parallel::{
    Collective, Group, Input, LayerPlan, ParallelConfig, ParallelPlan, Placement,
};

pub const HIDDEN: usize = 16;
pub const HEAD_DIM: usize = 4;
pub const VOCAB: usize = 32;
pub const EXPERTS: usize = 8;
pub const TOP_K: usize = 2;
pub const RANK: usize = 4;

/// The four architectures, each with two layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mixtral,
    Qwen2Moe,
    DeepseekV3,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Llama, Arch::Mixtral, Arch::Qwen2Moe, Arch::DeepseekV3];

    /// The architecture's key in `fixtures/parallel/transformers_plans.json`.
    pub fn transformers_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mixtral => "mixtral",
            Arch::Qwen2Moe => "qwen2_moe",
            Arch::DeepseekV3 => "deepseek_v3",
        }
    }
}

#[derive(ModuleTree)]
pub struct CausalLm {
    pub model: Model,
    #[layer(kind = "linear", head, parallel = "column_gather")]
    pub lm_head: LoraLinear,
}

#[derive(ModuleTree)]
pub struct Model {
    pub embed_tokens: LoraEmbedding,
    #[tree(layers)]
    pub layers: Vec<Layer>,
    pub norm: Tensor,
}

#[derive(ModuleTree)]
pub struct Layer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: Tensor,
    pub post_attention_layernorm: Tensor,
}

#[derive(ModuleTree)]
pub enum Attention {
    Heads(Heads),
    Latent(Latent),
}

/// Multi-head attention, split by heads over the tensor group.
#[derive(ModuleTree)]
pub struct Heads {
    #[layer(kind = "linear", parallel = "column")]
    pub q_proj: LoraLinear,
    #[layer(kind = "linear", parallel = "column")]
    pub k_proj: LoraLinear,
    #[layer(kind = "linear", parallel = "column")]
    pub v_proj: LoraLinear,
    #[layer(kind = "linear", parallel = "row")]
    pub o_proj: LoraLinear,
}

/// DeepSeek's multi-head latent attention, whole on every rank (transformers plans none of it).
#[derive(ModuleTree)]
pub struct Latent {
    pub q_a_proj: LoraLinear,
    pub q_a_layernorm: Tensor,
    pub q_b_proj: LoraLinear,
    pub kv_a_proj_with_mqa: LoraLinear,
    pub kv_a_layernorm: Tensor,
    pub kv_b_proj: LoraLinear,
    pub o_proj: LoraLinear,
}

#[derive(ModuleTree)]
#[allow(clippy::large_enum_variant, reason = "two layers of a test model")]
pub enum Mlp {
    Dense(Dense),
    Sparse(Sparse),
}

#[derive(ModuleTree)]
pub struct Dense {
    #[layer(kind = "linear", parallel = "column")]
    pub gate_proj: LoraLinear,
    #[layer(kind = "linear", parallel = "column")]
    pub up_proj: LoraLinear,
    #[layer(kind = "linear", parallel = "row")]
    pub down_proj: LoraLinear,
}

/// An MLP without styles: whole on every rank (Qwen2-MoE's shared expert).
#[derive(ModuleTree)]
pub struct Whole {
    pub gate_proj: LoraLinear,
    pub up_proj: LoraLinear,
    pub down_proj: LoraLinear,
}

#[derive(Clone, Copy, Debug)]
pub enum Routing {
    /// Softmax over all experts, the top k kept, renormalised or not (Mixtral, Qwen2-MoE).
    Softmax { renormalize: bool },
    /// Sigmoid scores, the top k normalised and scaled (DeepSeek-V3).
    Sigmoid { scale: f32 },
}

#[derive(ModuleTree)]
pub struct Sparse {
    #[layer(kind = "router")]
    pub gate: LoraLinear,
    pub experts: Experts,
    #[expert(shared)]
    pub shared_expert: Option<Whole>,
    pub shared_expert_gate: Option<LoraLinear>,
    #[expert(shared)]
    pub shared_experts: Option<Dense>,
    #[tree(skip)]
    pub routing: Routing,
}

/// Experts fused as transformers 5 holds them: `gate_up_proj [E, 2I, H]`, `down_proj [E, H, I]`.
#[derive(ModuleTree)]
pub struct Experts {
    #[layer(kind = "grouped_linear", parallel = "packed_column", parts = [1, 1])]
    pub gate_up_proj: ExpertBank,
    #[layer(kind = "grouped_linear", parallel = "row")]
    pub down_proj: ExpertBank,
}

/// Deterministic values in `[-scale, scale)` (SplitMix64).
pub struct Values(u64);

impl Values {
    pub fn new(seed: u64) -> Values {
        Values(seed)
    }

    pub fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|_| {
                self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// A linear `[out, in]` with a LoRA adapter of rank [`RANK`] whose `B` is not zero.
    pub fn linear(&mut self, out: usize, inp: usize) -> LoraLinear {
        let scale = 1.0 / (inp as f32).sqrt();
        let mut slot = LoraLinear::new(Linear::new(self.tensor(&[out, inp], scale), None));
        let a = self.tensor(&[RANK, inp], scale);
        let b = self.tensor(&[out, RANK], 0.5);
        slot.add_adapter("default", LoraAdapter::new(a, b, 8.0, false).unwrap())
            .unwrap();
        slot
    }

    pub fn embedding(&mut self, vocab: usize, hidden: usize) -> LoraEmbedding {
        let table = self.tensor(&[vocab, hidden], 1.0);
        let mut slot = LoraEmbedding::new(Embedding::new(table, hidden));
        let a = self.tensor(&[RANK, vocab], 1.0);
        let b = self.tensor(&[hidden, RANK], 0.5);
        slot.add_adapter("default", LoraAdapter::new(a, b, 8.0, false).unwrap())
            .unwrap();
        slot
    }

    /// A bank `[E, out, in]` with a fused adapter (`A: [E·r, in]`, `B: [out, r·E]`).
    pub fn bank(&mut self, out: usize, inp: usize) -> ExpertBank {
        let scale = 1.0 / (inp as f32).sqrt();
        let mut bank = ExpertBank::new(self.tensor(&[EXPERTS, out, inp], scale)).unwrap();
        let a = self.tensor(&[EXPERTS * RANK, inp], scale);
        let b = self.tensor(&[out, RANK * EXPERTS], 0.5);
        let adapter = ExpertAdapter::new(a, b, EXPERTS, 8.0, false).unwrap();
        bank.add_adapter("default", adapter).unwrap();
        bank
    }

    pub fn norm(&mut self, width: usize) -> Tensor {
        (self.tensor(&[width], 0.2) + 1.0).unwrap()
    }
}

fn dense(values: &mut Values, inner: usize) -> Dense {
    Dense {
        gate_proj: values.linear(inner, HIDDEN),
        up_proj: values.linear(inner, HIDDEN),
        down_proj: values.linear(HIDDEN, inner),
    }
}

/// A two-layer model of `arch` with LoRA on every layer.
pub fn build(arch: Arch) -> CausalLm {
    let mut values = Values::new(arch as u64 + 1);
    let layers = (0..2)
        .map(|index| {
            let self_attn = if arch == Arch::DeepseekV3 {
                Attention::Latent(Latent {
                    q_a_proj: values.linear(8, HIDDEN),
                    q_a_layernorm: values.norm(8),
                    q_b_proj: values.linear(HIDDEN, 8),
                    kv_a_proj_with_mqa: values.linear(8, HIDDEN),
                    kv_a_layernorm: values.norm(8),
                    kv_b_proj: values.linear(2 * HIDDEN, 8),
                    o_proj: values.linear(HIDDEN, HIDDEN),
                })
            } else {
                Attention::Heads(Heads {
                    q_proj: values.linear(HIDDEN, HIDDEN),
                    k_proj: values.linear(HIDDEN, HIDDEN),
                    v_proj: values.linear(HIDDEN, HIDDEN),
                    o_proj: values.linear(HIDDEN, HIDDEN),
                })
            };
            let sparse = match arch {
                Arch::Llama => false,
                Arch::Mixtral => true,
                Arch::Qwen2Moe | Arch::DeepseekV3 => index == 1,
            };
            let mlp = if sparse {
                Mlp::Sparse(Sparse {
                    gate: values.linear(EXPERTS, HIDDEN),
                    experts: Experts {
                        gate_up_proj: values.bank(16, HIDDEN),
                        down_proj: values.bank(HIDDEN, 8),
                    },
                    shared_expert: (arch == Arch::Qwen2Moe).then(|| Whole {
                        gate_proj: values.linear(32, HIDDEN),
                        up_proj: values.linear(32, HIDDEN),
                        down_proj: values.linear(HIDDEN, 32),
                    }),
                    shared_expert_gate: (arch == Arch::Qwen2Moe).then(|| values.linear(1, HIDDEN)),
                    shared_experts: (arch == Arch::DeepseekV3).then(|| dense(&mut values, 16)),
                    routing: match arch {
                        Arch::Mixtral => Routing::Softmax { renormalize: true },
                        Arch::Qwen2Moe => Routing::Softmax { renormalize: false },
                        _ => Routing::Sigmoid { scale: 2.5 },
                    },
                })
            } else {
                Mlp::Dense(dense(&mut values, 32))
            };
            Layer {
                self_attn,
                mlp,
                input_layernorm: values.norm(HIDDEN),
                post_attention_layernorm: values.norm(HIDDEN),
            }
        })
        .collect();
    CausalLm {
        model: Model {
            embed_tokens: values.embedding(VOCAB, HIDDEN),
            layers,
            norm: values.norm(HIDDEN),
        },
        lm_head: values.linear(VOCAB, HIDDEN),
    }
}

/// One activation per rank of the tensor group (one in all for the reference).
pub type Act = Vec<Tensor>;

/// Runs the layers of a forward.
pub trait Exec {
    /// The embedding at `path` applied to `tokens`.
    fn embed(&self, path: &str, tokens: &[u32]) -> Act;
    /// The linear at `path` applied to `x`.
    fn linear(&self, path: &str, x: &Act) -> Act;
    /// The fused experts under `path` applied to `x` (whole), tokens sent as `routes` say.
    fn experts(&self, path: &str, x: &Act, routes: &[Vec<(usize, f32)>]) -> Act;
}

pub fn map(x: &Act, f: impl Fn(&Tensor) -> Tensor) -> Act {
    x.iter().map(f).collect()
}

pub fn zip(x: &Act, y: &Act, f: impl Fn(&Tensor, &Tensor) -> Tensor) -> Act {
    x.iter().zip(y).map(|(x, y)| f(x, y)).collect()
}

fn add(x: &Act, y: &Act) -> Act {
    zip(x, y, |x, y| (x + y).unwrap())
}

pub fn rms(x: &Tensor, weight: &Tensor) -> Tensor {
    let variance = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    x.broadcast_div(&(variance + 1e-6).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(weight)
        .unwrap()
}

pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Tensor {
    (candle_nn::ops::silu(gate).unwrap() * up).unwrap()
}

/// Causal attention over however many heads of [`HEAD_DIM`] the rank holds.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let (tokens, width) = q.dims2().unwrap();
    let heads = width / HEAD_DIM;
    let split = |t: &Tensor| {
        t.reshape((tokens, heads, HEAD_DIM))
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let (q, k, v) = (split(q), split(k), split(v));
    let scores = (q.matmul(&k.t().unwrap()).unwrap() / (HEAD_DIM as f64).sqrt()).unwrap();
    let mask: Vec<f32> = (0..tokens)
        .flat_map(|row| (0..tokens).map(move |col| if col > row { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (tokens, tokens), &Device::Cpu).unwrap();
    let weights = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask).unwrap()).unwrap();
    weights
        .matmul(&v)
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .reshape((tokens, width))
        .unwrap()
}

fn dense_forward(exec: &dyn Exec, path: &str, h: &Act) -> Act {
    let gate = exec.linear(&format!("{path}.gate_proj"), h);
    let up = exec.linear(&format!("{path}.up_proj"), h);
    exec.linear(&format!("{path}.down_proj"), &zip(&gate, &up, silu_mul))
}

fn route(logits: &Tensor, routing: Routing) -> Vec<Vec<(usize, f32)>> {
    let scores = match routing {
        Routing::Softmax { .. } => candle_nn::ops::softmax_last_dim(logits).unwrap(),
        Routing::Sigmoid { .. } => candle_nn::ops::sigmoid(logits).unwrap(),
    };
    scores
        .to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
            let chosen: Vec<(usize, f32)> = order[..TOP_K].iter().map(|e| (*e, row[*e])).collect();
            let total: f32 = chosen.iter().map(|(_, w)| w).sum();
            match routing {
                Routing::Softmax { renormalize: false } => chosen,
                Routing::Softmax { renormalize: true } => {
                    chosen.into_iter().map(|(e, w)| (e, w / total)).collect()
                }
                Routing::Sigmoid { scale } => chosen
                    .into_iter()
                    .map(|(e, w)| (e, w / total * scale))
                    .collect(),
            }
        })
        .collect()
}

fn sparse_forward(exec: &dyn Exec, path: &str, sparse: &Sparse, h: &Act) -> Act {
    let logits = exec.linear(&format!("{path}.gate"), h);
    let routes = route(&logits[0], sparse.routing);
    let mut out = exec.experts(&format!("{path}.experts"), h, &routes);
    if sparse.shared_expert.is_some() {
        let shared = dense_forward(exec, &format!("{path}.shared_expert"), h);
        let gate = exec.linear(&format!("{path}.shared_expert_gate"), h);
        let gated = zip(&shared, &gate, |shared, gate| {
            shared
                .broadcast_mul(&candle_nn::ops::sigmoid(gate).unwrap())
                .unwrap()
        });
        out = add(&out, &gated);
    }
    if sparse.shared_experts.is_some() {
        out = add(
            &out,
            &dense_forward(exec, &format!("{path}.shared_experts"), h),
        );
    }
    out
}

/// The model's logits `[tokens, vocabulary]`, the layers run by `exec`.
pub fn forward(model: &CausalLm, exec: &dyn Exec, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut x = exec.embed("model.embed_tokens", tokens);
    for (index, layer) in model.model.layers.iter().enumerate() {
        let path = format!("model.layers.{index}");
        let h = map(&x, |x| rms(x, &layer.input_layernorm));
        let attn = format!("{path}.self_attn");
        let attended = match &layer.self_attn {
            Attention::Heads(_) => {
                let q = exec.linear(&format!("{attn}.q_proj"), &h);
                let k = exec.linear(&format!("{attn}.k_proj"), &h);
                let v = exec.linear(&format!("{attn}.v_proj"), &h);
                let mixed: Act = (0..q.len())
                    .map(|r| attention(&q[r], &k[r], &v[r]))
                    .collect();
                exec.linear(&format!("{attn}.o_proj"), &mixed)
            }
            Attention::Latent(latent) => {
                let q_a = exec.linear(&format!("{attn}.q_a_proj"), &h);
                let q = exec.linear(
                    &format!("{attn}.q_b_proj"),
                    &map(&q_a, |t| rms(t, &latent.q_a_layernorm)),
                );
                let kv_a = exec.linear(&format!("{attn}.kv_a_proj_with_mqa"), &h);
                let kv = exec.linear(
                    &format!("{attn}.kv_b_proj"),
                    &map(&kv_a, |t| rms(t, &latent.kv_a_layernorm)),
                );
                let mixed: Act = (0..q.len())
                    .map(|r| {
                        let tokens = kv[r].dim(0).unwrap();
                        let heads = kv[r]
                            .reshape((tokens, HIDDEN / HEAD_DIM, 2 * HEAD_DIM))
                            .unwrap();
                        let k = heads
                            .narrow(2, 0, HEAD_DIM)
                            .unwrap()
                            .reshape((tokens, HIDDEN))
                            .unwrap();
                        let v = heads
                            .narrow(2, HEAD_DIM, HEAD_DIM)
                            .unwrap()
                            .reshape((tokens, HIDDEN))
                            .unwrap();
                        attention(&q[r], &k, &v)
                    })
                    .collect();
                exec.linear(&format!("{attn}.o_proj"), &mixed)
            }
        };
        x = add(&x, &attended);
        let h = map(&x, |x| rms(x, &layer.post_attention_layernorm));
        let mlp = format!("{path}.mlp");
        let mixed = match &layer.mlp {
            Mlp::Dense(_) => dense_forward(exec, &mlp, &h),
            Mlp::Sparse(sparse) => sparse_forward(exec, &mlp, sparse, &h),
        };
        x = add(&x, &mixed);
    }
    let x = map(&x, |x| rms(x, &model.model.norm));
    let logits = exec.linear("lm_head", &x);
    for other in &logits[1..] {
        assert_eq!(
            other.to_vec2::<f32>().unwrap(),
            logits[0].to_vec2::<f32>().unwrap(),
            "the ranks disagree on the gathered logits"
        );
    }
    logits[0].to_vec2::<f32>().unwrap()
}

/// The leaves of a model by path.
/// (Copies: a candle tensor shares its storage.)
pub struct Leaves {
    pub linears: HashMap<String, LoraLinear>,
    pub embeddings: HashMap<String, LoraEmbedding>,
    pub banks: HashMap<String, ExpertBank>,
}

impl Leaves {
    pub fn of(model: &impl ModuleTree) -> Leaves {
        let mut leaves = Leaves {
            linears: HashMap::new(),
            embeddings: HashMap::new(),
            banks: HashMap::new(),
        };
        moduletree::walk(model, |node| {
            let path = node.path().to_string();
            if let Some(slot) = node.downcast_ref::<LoraLinear>() {
                leaves.linears.insert(path, slot.clone());
            } else if let Some(slot) = node.downcast_ref::<LoraEmbedding>() {
                leaves.embeddings.insert(path, slot.clone());
            } else if let Some(bank) = node.downcast_ref::<ExpertBank>() {
                leaves.banks.insert(path, bank.clone());
            }
        });
        leaves
    }

    /// The path of every leaf layer.
    pub fn paths(model: &impl ModuleTree) -> Vec<String> {
        let mut paths = Vec::new();
        moduletree::walk(model, |node| {
            if node.is_layer() {
                paths.push(node.path().to_string());
            }
        });
        paths
    }

    fn linear(&self, path: &str) -> &LoraLinear {
        self.linears
            .get(path)
            .unwrap_or_else(|| panic!("no linear at {path}"))
    }

    fn bank(&self, path: &str) -> &ExpertBank {
        self.banks
            .get(path)
            .unwrap_or_else(|| panic!("no bank at {path}"))
    }
}

/// The unsharded model: every layer runs itself.
pub struct Reference(pub Leaves);

impl Exec for Reference {
    fn embed(&self, path: &str, tokens: &[u32]) -> Act {
        let ids = Tensor::new(tokens, &Device::Cpu).unwrap();
        vec![self.0.embeddings[path].forward(&ids).unwrap()]
    }

    fn linear(&self, path: &str, x: &Act) -> Act {
        map(x, |x| self.0.linear(path).forward(x).unwrap())
    }

    fn experts(&self, path: &str, x: &Act, routes: &[Vec<(usize, f32)>]) -> Act {
        let gate_up = self.0.bank(&format!("{path}.gate_up_proj"));
        let down = self.0.bank(&format!("{path}.down_proj"));
        let mut out = x[0].zeros_like().unwrap();
        for expert in 0..gate_up.num_experts() {
            let Some((tokens, weights)) = routed_to(routes, expert) else {
                continue;
            };
            let inputs = x[0].index_select(&tokens, 0).unwrap();
            let hidden = gate_up.forward_expert(expert, &inputs).unwrap();
            let half = hidden.dim(1).unwrap() / 2;
            let act = silu_mul(
                &hidden.narrow(1, 0, half).unwrap(),
                &hidden.narrow(1, half, half).unwrap(),
            );
            let y = down.forward_expert(expert, &act).unwrap();
            out = out
                .index_add(&tokens, &y.broadcast_mul(&weights).unwrap(), 0)
                .unwrap();
        }
        vec![out]
    }
}

/// The tokens routed to `expert` and their weights `[n, 1]`.
pub fn routed_to(routes: &[Vec<(usize, f32)>], expert: usize) -> Option<(Tensor, Tensor)> {
    let (tokens, weights): (Vec<u32>, Vec<f32>) = routes
        .iter()
        .enumerate()
        .filter_map(|(token, chosen)| {
            chosen
                .iter()
                .find(|(e, _)| *e == expert)
                .map(|(_, weight)| (token as u32, *weight))
        })
        .unzip();
    if tokens.is_empty() {
        return None;
    }
    let count = weights.len();
    Some((
        Tensor::new(tokens, &Device::Cpu).unwrap(),
        Tensor::from_vec(weights, (count, 1), &Device::Cpu).unwrap(),
    ))
}

pub fn reference_logits(model: &CausalLm, tokens: &[u32]) -> Vec<Vec<f32>> {
    forward(model, &Reference(Leaves::of(model)), tokens)
}

/// A rank's position in each group.
#[derive(Clone, Copy, Debug, Default)]
pub struct Coords {
    pub tp: usize,
    pub ep: usize,
    pub etp: usize,
}

impl Coords {
    fn of(self, group: Group) -> usize {
        match group {
            Group::Tensor => self.tp,
            Group::Expert => self.ep,
            Group::ExpertTensor => self.etp,
        }
    }
}

/// What rank `coords` holds of `tensor` placed as `placement`.
pub fn select(
    tensor: &Tensor,
    placement: &Placement,
    config: &ParallelConfig,
    coords: Coords,
) -> Tensor {
    let mut out = tensor.clone();
    for shard in &placement.shards {
        let len = tensor.dim(shard.dim).unwrap();
        let indices = shard
            .indices(len, shard.group.size(config), coords.of(shard.group))
            .unwrap_or_else(|| panic!("{shard:?} does not split {len}"));
        let indices: Vec<u32> = indices.into_iter().map(|i| i as u32).collect();
        out = out
            .index_select(&Tensor::new(indices, &Device::Cpu).unwrap(), shard.dim)
            .unwrap();
    }
    out
}

/// The collective, over the results of one group's ranks.
pub fn collect(collective: Collective, parts: Vec<Tensor>) -> Vec<Tensor> {
    match collective {
        Collective::None | Collective::Deferred(_) => parts,
        Collective::AllReduce(_) => {
            let mut sum = parts[0].clone();
            for part in &parts[1..] {
                sum = (sum + part).unwrap();
            }
            vec![sum; parts.len()]
        }
        Collective::AllGather(_) => {
            let whole = Tensor::cat(&parts, D::Minus1).unwrap();
            vec![whole; parts.len()]
        }
    }
}

fn project(x: &Tensor, weight: &Tensor) -> Tensor {
    x.matmul(&weight.t().unwrap()).unwrap()
}

/// One linear's product on every rank of its group: `xs`, weights and factors are the ranks'
/// own; the plan's collectives join them.
pub fn run(
    layer: &LayerPlan,
    xs: Vec<Tensor>,
    weights: &[Tensor],
    a: &[Tensor],
    b: &[Tensor],
    scale: f64,
) -> Vec<Tensor> {
    let lora = layer.lora.as_ref().expect("an adaptable layer");
    let base = xs.iter().zip(weights).map(|(x, w)| project(x, w)).collect();
    let base = collect(layer.after_base, base);
    let down = xs.iter().zip(a).map(|(x, a)| project(x, a)).collect();
    adapted(base, down, b, scale, lora)
}

/// The adapter's half of a product on every rank: `x·Aᵀ` (each rank's `down`) joined as the plan
/// says, times `Bᵀ` and the scale, joined again, and added to the base's output.
fn adapted(
    base: Vec<Tensor>,
    down: Vec<Tensor>,
    b: &[Tensor],
    scale: f64,
    lora: &moduletree::parallel::LoraPlacement,
) -> Vec<Tensor> {
    let down = collect(lora.after_a, down);
    let up = down
        .iter()
        .zip(b)
        .map(|(h, b)| project(h, b).affine(scale, 0.0).unwrap())
        .collect();
    let up = collect(lora.after_b, up);
    base.iter()
        .zip(&up)
        .map(|(base, up)| (base + up).unwrap())
        .collect()
}

/// The model run as the ranks of a plan.
pub struct Sim {
    leaves: Leaves,
    config: ParallelConfig,
    layers: HashMap<String, LayerPlan>,
}

impl Sim {
    pub fn of(model: &impl ModuleTree, plan: &ParallelPlan) -> Sim {
        Sim {
            leaves: Leaves::of(model),
            config: *plan.config(),
            layers: Leaves::paths(model)
                .into_iter()
                .filter_map(|path| Some((path.clone(), plan.layer(&path)?)))
                .collect(),
        }
    }

    /// Changes one layer's plan, to show what a wrong plan does.
    pub fn edit(&mut self, path: &str, change: impl FnOnce(&mut LayerPlan)) {
        change(self.layers.get_mut(path).expect("a planned layer"));
    }

    fn layer(&self, path: &str) -> &LayerPlan {
        self.layers
            .get(path)
            .unwrap_or_else(|| panic!("no plan for {path}"))
    }

    fn tensor_ranks(&self) -> Vec<Coords> {
        (0..self.config.tp)
            .map(|tp| Coords {
                tp,
                ..Coords::default()
            })
            .collect()
    }

    /// Each rank's share of `tensor` placed as `placement`.
    fn shares(&self, tensor: &Tensor, placement: &Placement, ranks: &[Coords]) -> Vec<Tensor> {
        ranks
            .iter()
            .map(|coords| select(tensor, placement, &self.config, *coords))
            .collect()
    }
}

/// The logits of `model` run as the ranks of `plan`.
pub fn sim_logits(model: &CausalLm, plan: &ParallelPlan, tokens: &[u32]) -> Vec<Vec<f32>> {
    forward(model, &Sim::of(model, plan), tokens)
}

impl Exec for Sim {
    fn embed(&self, path: &str, tokens: &[u32]) -> Act {
        let layer = self.layer(path);
        let lora = layer.lora.as_ref().unwrap();
        let slot = &self.leaves.embeddings[path];
        let (_, adapter) = slot.active_adapter().unwrap();
        let ranks = self.tensor_ranks();
        let table = slot.base().embeddings();
        let vocab = table.dim(0).unwrap();
        // The vocabulary rows each rank holds, found by placing the row numbers themselves.
        let rows = Tensor::arange(0u32, vocab as u32, &Device::Cpu).unwrap();
        let lookup = |held: &Tensor, values: &Tensor| -> Tensor {
            // values: [held rows, width]; a token outside the held rows looks up zeros.
            let held = held.to_vec1::<u32>().unwrap();
            let width = values.dim(1).unwrap();
            let zero = Tensor::zeros((1, width), DType::F32, &Device::Cpu).unwrap();
            let picked: Vec<Tensor> = tokens
                .iter()
                .map(|token| match held.iter().position(|row| row == token) {
                    Some(at) => values.narrow(0, at, 1).unwrap(),
                    None => zero.clone(),
                })
                .collect();
            Tensor::cat(&picked, 0).unwrap()
        };
        let held_rows = |placement: &Placement, dim: usize, coords: Coords| {
            let placement = Placement {
                shards: placement
                    .shards
                    .iter()
                    .filter(|shard| shard.dim == dim)
                    .map(|shard| moduletree::parallel::Shard {
                        dim: 0,
                        ..shard.clone()
                    })
                    .collect(),
            };
            select(&rows, &placement, &self.config, coords)
        };
        let base = ranks
            .iter()
            .map(|coords| {
                let table = select(table, &layer.weight, &self.config, *coords);
                lookup(&held_rows(&layer.weight, 0, *coords), &table)
            })
            .collect();
        let base = collect(layer.after_base, base);
        let down = ranks
            .iter()
            .map(|coords| {
                let a = select(adapter.a(), &lora.a, &self.config, *coords);
                lookup(
                    &held_rows(&lora.a, 1, *coords),
                    &a.t().unwrap().contiguous().unwrap(),
                )
            })
            .collect();
        let b = self.shares(adapter.b(), &lora.b, &ranks);
        adapted(base, down, &b, adapter.scale(), lora)
    }

    fn linear(&self, path: &str, x: &Act) -> Act {
        let layer = self.layer(path);
        let lora = layer.lora.as_ref().unwrap();
        let slot = self.leaves.linear(path);
        let (_, adapter) = slot.active_adapter().unwrap();
        let ranks = self.tensor_ranks();
        let inputs: Vec<Tensor> = match layer.input {
            Input::Whole | Input::Split(_) => x.clone(),
            Input::SplitHere(group) => {
                // The layer takes its rank's block of the whole input: the block its weight holds.
                let width = slot.in_features();
                let columns = Tensor::arange(0u32, width as u32, &Device::Cpu).unwrap();
                let shard = layer.weight.shard_over(group).unwrap();
                let placement = Placement::split(moduletree::parallel::Shard {
                    dim: 0,
                    ..shard.clone()
                });
                ranks
                    .iter()
                    .zip(x)
                    .map(|(coords, x)| {
                        let held = select(&columns, &placement, &self.config, *coords);
                        x.index_select(&held, 1).unwrap()
                    })
                    .collect()
            }
        };
        let weights = self.shares(slot.base().weight(), &layer.weight, &ranks);
        let a = self.shares(adapter.a(), &lora.a, &ranks);
        let b = self.shares(adapter.b(), &lora.b, &ranks);
        run(layer, inputs, &weights, &a, &b, adapter.scale())
    }

    fn experts(&self, path: &str, x: &Act, routes: &[Vec<(usize, f32)>]) -> Act {
        let gate_up_path = format!("{path}.gate_up_proj");
        let down_path = format!("{path}.down_proj");
        let (gate_up, down) = (
            self.leaves.bank(&gate_up_path),
            self.leaves.bank(&down_path),
        );
        let (gate_up_plan, down_plan) = (self.layer(&gate_up_path), self.layer(&down_path));
        let experts = gate_up.num_experts();
        let local = experts / self.config.ep;
        let mut out = x[0].zeros_like().unwrap();
        for ep in 0..self.config.ep {
            let ranks: Vec<Coords> = (0..self.config.etp)
                .map(|etp| Coords { tp: 0, ep, etp })
                .collect();
            let shares = |bank: &ExpertBank, plan: &LayerPlan| {
                let (_, adapter) = bank.active_adapter().unwrap();
                let lora = plan.lora.as_ref().unwrap();
                (
                    self.shares(bank.weight(), &plan.weight, &ranks),
                    self.shares(adapter.a(), &lora.a, &ranks),
                    self.shares(adapter.b(), &lora.b, &ranks),
                    adapter.rank(),
                    adapter.scale(),
                )
            };
            let gate_up_shares = shares(gate_up, gate_up_plan);
            let down_shares = shares(down, down_plan);
            for held in 0..local {
                let expert = ep * local + held;
                let Some((tokens, weights)) = routed_to(routes, expert) else {
                    continue;
                };
                // Expert `held` of this rank's shares: its matrix, its rows of A and its columns
                // `k·local + held` of B.
                let of_expert =
                    |(w, a, b, rank, _): &(Vec<Tensor>, Vec<Tensor>, Vec<Tensor>, usize, f64)| {
                        let columns: Vec<u32> =
                            (0..*rank).map(|k| (k * local + held) as u32).collect();
                        let columns = Tensor::new(columns, &Device::Cpu).unwrap();
                        (
                            w.iter().map(|w| w.get(held).unwrap()).collect::<Vec<_>>(),
                            a.iter()
                                .map(|a| a.narrow(0, held * rank, *rank).unwrap())
                                .collect::<Vec<_>>(),
                            b.iter()
                                .map(|b| b.index_select(&columns, 1).unwrap())
                                .collect::<Vec<_>>(),
                        )
                    };
                let inputs = x[0].index_select(&tokens, 0).unwrap();
                let (w, a, b) = of_expert(&gate_up_shares);
                let hidden = run(
                    gate_up_plan,
                    vec![inputs; ranks.len()],
                    &w,
                    &a,
                    &b,
                    gate_up_shares.4,
                );
                let act: Vec<Tensor> = hidden
                    .iter()
                    .map(|h| {
                        let half = h.dim(1).unwrap() / 2;
                        silu_mul(
                            &h.narrow(1, 0, half).unwrap(),
                            &h.narrow(1, half, half).unwrap(),
                        )
                    })
                    .collect();
                let (w, a, b) = of_expert(&down_shares);
                // Partial sums over the expert-tensor group, combined here with every other
                // expert's: the experts module's one reduction.
                for partial in run(down_plan, act, &w, &a, &b, down_shares.4) {
                    out = out
                        .index_add(&tokens, &partial.broadcast_mul(&weights).unwrap(), 0)
                        .unwrap();
                }
            }
        }
        vec![out; self.config.tp]
    }
}
