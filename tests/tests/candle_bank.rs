//! Experts fused in one weight (`ExpertBank`) with LoRA as PEFT's `ParamWrapper` computes it:
//! `A [E·r, in]` expert-major, `B [out, r·E]` rank-major, `ΔW_e = scale · B_e A_e`, checked
//! element by element against that definition, against per-expert `LoraLinear`s, merged and
//! unmerged, in both weight layouts.
#![cfg(feature = "candle")]

use candle_core::{DType, Device, Module, Tensor};
use moduletree::candle::{ExpertAdapter, ExpertBank, LoraAdapter, LoraError, LoraLinear};
use moduletree::{Kind, ModuleTree};

const EXPERTS: usize = 3;
const RANK: usize = 2;
const IN: usize = 5;
const OUT: usize = 4;

fn ramp(shape: &[usize], seed: f32) -> Tensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len)
        .map(|i| (i as f32 * 0.37 + seed).sin() * 0.5)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn adapter(alpha: f64, rslora: bool) -> ExpertAdapter {
    ExpertAdapter::new(
        ramp(&[EXPERTS * RANK, IN], 1.0),
        ramp(&[OUT, RANK * EXPERTS], 2.0),
        EXPERTS,
        alpha,
        rslora,
    )
    .unwrap()
}

fn values(tensor: &Tensor) -> Vec<f32> {
    tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn close(left: &Tensor, right: &Tensor) -> f32 {
    values(left)
        .iter()
        .zip(values(right))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_delta_is_pefts_param_wrapper_delta() {
    let adapter = adapter(6.0, false);
    let scale = 6.0 / RANK as f32;
    let a = values(adapter.a());
    let b = values(adapter.b());
    let delta = values(&adapter.delta_weight().unwrap());
    assert_eq!(adapter.delta_weight().unwrap().dims(), [EXPERTS, OUT, IN]);
    for e in 0..EXPERTS {
        for o in 0..OUT {
            for i in 0..IN {
                // B is [out, r·E] rank-major: column k·E + e; A is [E·r, in]: row e·r + k.
                let expected: f32 = (0..RANK)
                    .map(|k| b[o * RANK * EXPERTS + k * EXPERTS + e] * a[(e * RANK + k) * IN + i])
                    .sum::<f32>()
                    * scale;
                let found = delta[(e * OUT + o) * IN + i];
                assert!((expected - found).abs() < 1e-6, "e {e} o {o} i {i}");
            }
        }
    }
    assert!((adapter.scale() - 3.0).abs() < 1e-12);
    assert!((self::adapter(6.0, true).scale() - 6.0 / 2f64.sqrt()).abs() < 1e-12);
}

#[test]
fn each_expert_computes_what_a_lora_linear_of_its_factors_computes() {
    for transposed in [false, true] {
        let weight = ramp(&[EXPERTS, OUT, IN], 3.0);
        let mut bank = if transposed {
            ExpertBank::transposed(weight.transpose(1, 2).unwrap().contiguous().unwrap()).unwrap()
        } else {
            ExpertBank::new(weight.clone()).unwrap()
        };
        assert_eq!(
            (bank.num_experts(), bank.in_features(), bank.out_features()),
            (EXPERTS, IN, OUT)
        );
        let adapter = adapter(4.0, false);
        bank.add_adapter("default", adapter.clone()).unwrap();
        let x = ramp(&[6, IN], 4.0);
        let unmerged: Vec<Tensor> = (0..EXPERTS)
            .map(|e| bank.forward_expert(e, &x).unwrap())
            .collect();
        for (e, y) in unmerged.iter().enumerate() {
            let (a, b) = adapter.expert_factors(e).unwrap();
            let mut reference =
                LoraLinear::new(candle_nn::Linear::new(weight.get(e).unwrap(), None));
            reference
                .add_adapter("default", LoraAdapter::new(a, b, 4.0, false).unwrap())
                .unwrap();
            assert!(
                close(y, &reference.forward(&x).unwrap()) < 1e-5,
                "expert {e}"
            );
        }
        // Merged, the bank computes the same; unmerged again, the weight is back.
        let before = bank.weight().clone();
        bank.merge().unwrap();
        assert!(bank.is_merged());
        for (e, y) in unmerged.iter().enumerate() {
            assert!(
                close(&bank.forward_expert(e, &x).unwrap(), y) < 1e-5,
                "merged {e}"
            );
        }
        bank.unmerge().unwrap();
        assert!(close(bank.weight(), &before) < 1e-6);
        // Disabled, the base alone.
        bank.set_adapters_enabled(false).unwrap();
        let base = x.matmul(&weight.get(1).unwrap().t().unwrap()).unwrap();
        assert!(close(&bank.forward_expert(1, &x).unwrap(), &base) < 1e-5);
    }
}

#[test]
fn a_bank_is_a_grouped_linear_leaf_and_an_expert() {
    #[derive(ModuleTree)]
    struct Experts {
        gate_up_proj: ExpertBank,
        down_proj: ExpertBank,
    }
    let experts = Experts {
        gate_up_proj: ExpertBank::new(ramp(&[EXPERTS, 2 * OUT, IN], 0.0)).unwrap(),
        down_proj: ExpertBank::new(ramp(&[EXPERTS, IN, OUT], 0.0)).unwrap(),
    };
    let mut found = Vec::new();
    moduletree::walk(&experts, |node| {
        if node.is_layer() {
            found.push((node.path().to_string(), node.kind(), node.is_expert()));
        }
    });
    assert_eq!(
        found,
        [
            ("gate_up_proj".to_owned(), Some(Kind::GroupedLinear), true),
            ("down_proj".to_owned(), Some(Kind::GroupedLinear), true),
        ]
    );
    assert_eq!(
        moduletree::find_all_linear_modules(&experts),
        ["gate_up_proj", "down_proj"]
    );
}

#[test]
fn adapters_that_do_not_fit_are_refused() {
    let mut bank = ExpertBank::new(ramp(&[EXPERTS, OUT, IN], 0.0)).unwrap();
    // Two experts' factors for a bank of three.
    let two = ExpertAdapter::new(
        ramp(&[2 * RANK, IN], 0.0),
        ramp(&[OUT, RANK * 2], 0.0),
        2,
        1.0,
        false,
    )
    .unwrap();
    let error = bank.add_adapter("default", two).unwrap_err();
    assert!(
        matches!(&error, LoraError::Shape { expected, .. } if expected == &[EXPERTS * RANK, IN]),
        "{error}"
    );
    // A rank that does not divide by the experts.
    let error = ExpertAdapter::new(
        ramp(&[5, IN], 0.0),
        ramp(&[OUT, 5], 0.0),
        EXPERTS,
        1.0,
        false,
    )
    .unwrap_err();
    assert!(matches!(error, LoraError::Shape { .. }), "{error}");
    // B's columns not A's rows.
    let error = ExpertAdapter::new(
        ramp(&[6, IN], 0.0),
        ramp(&[OUT, 3], 0.0),
        EXPERTS,
        1.0,
        false,
    )
    .unwrap_err();
    assert!(matches!(error, LoraError::Shape { .. }), "{error}");
    assert!(
        ExpertBank::new(ramp(&[OUT, IN], 0.0)).is_err(),
        "a 2-D weight is no bank"
    );
    let _ = DType::F32;
}

/// A scalar input has no feature axis: each layer refuses it with an error, in both weight
/// layouts, with and without an adapter, rather than failing inside the projection.
#[test]
fn a_scalar_input_is_refused() {
    let scalar = Tensor::new(1_f32, &Device::Cpu).unwrap();
    let mut bank = ExpertBank::new(ramp(&[EXPERTS, OUT, IN], 0.0)).unwrap();
    let error = bank.forward_expert(0, &scalar).unwrap_err().to_string();
    assert!(error.contains("got a scalar"), "{error}");
    bank.add_adapter("default", adapter(4.0, false)).unwrap();
    assert!(bank.forward_expert(0, &scalar).is_err());
    let transposed = ExpertBank::transposed(ramp(&[EXPERTS, IN, OUT], 0.0)).unwrap();
    assert!(transposed.forward_expert(0, &scalar).is_err());
    let linear = LoraLinear::new(candle_nn::Linear::new(ramp(&[OUT, IN], 0.0), None));
    assert!(linear.forward(&scalar).is_err());
}
