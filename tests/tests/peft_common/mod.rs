//! One small model written twice, with candle and with burn, with the same paths and the same
//! base weights, for the PEFT tests that compare the two frameworks.

#![allow(
    dead_code,
    reason = "each test binary that includes this module uses a different part of it"
)]

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::tensor::{Device as BurnDevice, Tensor as BurnTensor, TensorData};
use candle_core::{Device, Tensor};
use moduletree::ModuleTree;
use moduletree::candle::{LoraEmbedding, LoraLinear};

pub const HIDDEN: usize = 8;
pub const FFN: usize = 12;
pub const VOCAB: usize = 16;
pub const RANK: usize = 4;
/// Routed experts per layer, and each one's width.
pub const EXPERTS: usize = 2;
pub const EXPERT_FFN: usize = 6;

#[derive(ModuleTree, Debug)]
pub struct CandleMlp {
    pub up: LoraLinear,
    pub down: LoraLinear,
}

/// Routed experts fused in two banks, as transformers 5 holds them.
#[derive(ModuleTree, Debug)]
pub struct CandleExperts {
    pub gate_up_proj: moduletree::candle::ExpertBank,
    pub down_proj: moduletree::candle::ExpertBank,
}

#[derive(ModuleTree, Debug)]
pub struct CandleMoe {
    pub experts: CandleExperts,
}

#[derive(ModuleTree, Debug)]
pub struct CandleBlock {
    pub q_proj: LoraLinear,
    pub v_proj: LoraLinear,
    pub mlp: CandleMlp,
    pub moe: CandleMoe,
}

#[derive(ModuleTree, Debug)]
pub struct CandleModel {
    pub embed: LoraEmbedding,
    #[tree(layers)]
    pub layers: Vec<CandleBlock>,
    pub norm: candle_nn::RmsNorm,
    pub lm_head: LoraLinear,
}

#[derive(Module, ModuleTree, Debug)]
pub struct BurnMlp {
    pub up: burn::nn::Linear,
    pub down: burn::nn::Linear,
}

#[derive(Module, ModuleTree, Debug)]
pub struct BurnExperts {
    pub gate_up_proj: moduletree::burn::ExpertBank,
    pub down_proj: moduletree::burn::ExpertBank,
}

#[derive(Module, ModuleTree, Debug)]
pub struct BurnMoe {
    pub experts: BurnExperts,
}

#[derive(Module, ModuleTree, Debug)]
pub struct BurnBlock {
    pub q_proj: burn::nn::Linear,
    pub v_proj: burn::nn::Linear,
    pub mlp: BurnMlp,
    pub moe: BurnMoe,
}

#[derive(Module, ModuleTree, Debug)]
pub struct BurnModel {
    pub embed: burn::nn::Embedding,
    #[tree(layers)]
    pub layers: Vec<BurnBlock>,
    pub norm: burn::nn::RmsNorm,
    pub lm_head: burn::nn::Linear,
}

/// The linear layers: path, `[out, in]`, bias.
pub fn linears() -> Vec<(String, [usize; 2], bool)> {
    let mut layers = Vec::new();
    for index in 0..2 {
        let at = |name: &str| format!("layers.{index}.{name}");
        layers.push((at("q_proj"), [HIDDEN, HIDDEN], true));
        layers.push((at("v_proj"), [HIDDEN, HIDDEN], false));
        layers.push((at("mlp.up"), [FFN, HIDDEN], true));
        layers.push((at("mlp.down"), [HIDDEN, FFN], false));
    }
    layers.push(("lm_head".to_owned(), [VOCAB, HIDDEN], false));
    layers
}

/// The expert banks: path and `[E, out, in]`.
pub fn banks(index: usize) -> [(String, [usize; 3]); 2] {
    [
        (
            format!("layers.{index}.moe.experts.gate_up_proj"),
            [EXPERTS, 2 * EXPERT_FFN, HIDDEN],
        ),
        (
            format!("layers.{index}.moe.experts.down_proj"),
            [EXPERTS, HIDDEN, EXPERT_FFN],
        ),
    ]
}

/// Deterministic base values for the tensor `name` of `len` elements.
pub fn values(name: &str, len: usize) -> Vec<f32> {
    let seed = name.bytes().fold(7_u32, |acc, byte| {
        acc.wrapping_mul(31).wrapping_add(u32::from(byte))
    });
    (0..len)
        .map(|i| {
            let x = seed.wrapping_add(u32::try_from(i).unwrap().wrapping_mul(2_654_435_761));
            f32::from(u16::try_from(x % 1000).unwrap()) / 1000.0 - 0.5
        })
        .collect()
}

pub fn candle_model() -> CandleModel {
    let tensor = |name: &str, shape: &[usize]| {
        let len = shape.iter().product();
        Tensor::from_vec(values(name, len), shape, &Device::Cpu).unwrap()
    };
    let linear = |path: &str, [out, inp]: [usize; 2], bias: bool| {
        LoraLinear::new(candle_nn::Linear::new(
            tensor(&format!("{path}.weight"), &[out, inp]),
            bias.then(|| tensor(&format!("{path}.bias"), &[out])),
        ))
    };
    let all = linears();
    let find = |path: &str| {
        let (_, shape, bias) = all.iter().find(|(p, ..)| p == path).unwrap();
        linear(path, *shape, *bias)
    };
    CandleModel {
        embed: LoraEmbedding::new(candle_nn::Embedding::new(
            tensor("embed.weight", &[VOCAB, HIDDEN]),
            HIDDEN,
        )),
        layers: (0..2)
            .map(|index| CandleBlock {
                q_proj: find(&format!("layers.{index}.q_proj")),
                v_proj: find(&format!("layers.{index}.v_proj")),
                mlp: CandleMlp {
                    up: find(&format!("layers.{index}.mlp.up")),
                    down: find(&format!("layers.{index}.mlp.down")),
                },
                moe: {
                    let [(gate_up, gate_up_shape), (down, down_shape)] = banks(index);
                    let bank = |path: &str, shape: [usize; 3]| {
                        moduletree::candle::ExpertBank::new(tensor(
                            &format!("{path}.weight"),
                            &shape,
                        ))
                        .unwrap()
                    };
                    CandleMoe {
                        experts: CandleExperts {
                            gate_up_proj: bank(&gate_up, gate_up_shape),
                            down_proj: bank(&down, down_shape),
                        },
                    }
                },
            })
            .collect(),
        norm: candle_nn::RmsNorm::new(tensor("norm.weight", &[HIDDEN]), 1e-5),
        lm_head: find("lm_head"),
    }
}

pub fn burn_model() -> BurnModel {
    let device = BurnDevice::default();
    let matrix = |name: &str, [rows, cols]: [usize; 2]| {
        BurnTensor::<2>::from_data(
            TensorData::new(values(name, rows * cols), [rows, cols]),
            &device,
        )
    };
    let all = linears();
    let linear = |path: &str| {
        let (_, [out, inp], bias) = all.iter().find(|(p, ..)| p == path).unwrap();
        burn::nn::Linear {
            weight: Param::from_tensor(matrix(&format!("{path}.weight"), [*out, *inp]).transpose()),
            bias: bias.then(|| {
                let name = format!("{path}.bias");
                Param::from_tensor(BurnTensor::<1>::from_data(
                    TensorData::new(values(&name, *out), [*out]),
                    &device,
                ))
            }),
        }
    };
    BurnModel {
        embed: burn::nn::Embedding {
            weight: Param::from_tensor(matrix("embed.weight", [VOCAB, HIDDEN])),
        },
        layers: (0..2)
            .map(|index| BurnBlock {
                q_proj: linear(&format!("layers.{index}.q_proj")),
                v_proj: linear(&format!("layers.{index}.v_proj")),
                mlp: BurnMlp {
                    up: linear(&format!("layers.{index}.mlp.up")),
                    down: linear(&format!("layers.{index}.mlp.down")),
                },
                moe: {
                    let [(gate_up, gate_up_shape), (down, down_shape)] = banks(index);
                    let bank = |path: &str, shape: [usize; 3]| {
                        let name = format!("{path}.weight");
                        moduletree::burn::ExpertBank::new(BurnTensor::<3>::from_data(
                            TensorData::new(values(&name, shape.iter().product()), shape),
                            &device,
                        ))
                    };
                    BurnMoe {
                        experts: BurnExperts {
                            gate_up_proj: bank(&gate_up, gate_up_shape),
                            down_proj: bank(&down, down_shape),
                        },
                    }
                },
            })
            .collect(),
        norm: burn::nn::RmsNormConfig::new(HIDDEN).init(&device),
        lm_head: linear("lm_head"),
    }
}

/// Every weight of the candle model in PEFT's layout, with the adapters' state.
pub fn candle_state(model: &CandleModel) -> BTreeMap<String, Vec<f32>> {
    let flat = |tensor: &Tensor| tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut state = BTreeMap::new();
    moduletree::walk(model, |node| {
        let path = node.path().to_string();
        if let Some(slot) = node.downcast_ref::<LoraLinear>() {
            state.insert(format!("{path}.weight"), flat(slot.base().weight()));
            if let Some(bias) = slot.base().bias() {
                state.insert(format!("{path}.bias"), flat(bias));
            }
            for (name, adapter) in slot.adapters() {
                state.insert(format!("{path}.{name}.A"), flat(adapter.a()));
                state.insert(format!("{path}.{name}.B"), flat(adapter.b()));
            }
        } else if let Some(bank) = node.downcast_ref::<moduletree::candle::ExpertBank>() {
            state.insert(format!("{path}.weight"), flat(bank.weight()));
            for (name, adapter) in bank.adapters() {
                state.insert(format!("{path}.{name}.A"), flat(adapter.a()));
                state.insert(format!("{path}.{name}.B"), flat(adapter.b()));
            }
        } else if let Some(slot) = node.downcast_ref::<LoraEmbedding>() {
            state.insert(format!("{path}.weight"), flat(slot.base().embeddings()));
            for (name, adapter) in slot.adapters() {
                state.insert(format!("{path}.{name}.A"), flat(adapter.a()));
                state.insert(format!("{path}.{name}.B"), flat(adapter.b()));
            }
        }
    });
    state
}

/// The candle model's merged weights in burn's layout (`[in, out]` for a linear), for comparing.
pub fn candle_weights_as_burn(model: &CandleModel) -> BTreeMap<String, Vec<f32>> {
    let flat = |tensor: &Tensor| tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut weights = BTreeMap::new();
    moduletree::walk(model, |node| {
        let path = node.path().to_string();
        if let Some(slot) = node.downcast_ref::<LoraLinear>() {
            weights.insert(
                format!("{path}.weight"),
                flat(&slot.base().weight().t().unwrap()),
            );
        } else if let Some(slot) = node.downcast_ref::<LoraEmbedding>() {
            weights.insert(format!("{path}.weight"), flat(slot.base().embeddings()));
        } else if let Some(bank) = node.downcast_ref::<moduletree::candle::ExpertBank>() {
            weights.insert(format!("{path}.weight"), flat(bank.weight()));
        }
    });
    weights
}
