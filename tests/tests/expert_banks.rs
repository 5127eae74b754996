//! candle's and burn's expert banks compute the same: the same fused weight and PEFT-layout
//! factors give the same per-expert outputs, unmerged and merged, in both frameworks.
#![cfg(all(feature = "candle", feature = "burn"))]

use burn::module::Param;
use burn::tensor::{Device as BurnDevice, Tensor as BurnTensor, TensorData};
use candle_core::{Device, Tensor};
use moduletree::ModuleTree;

const EXPERTS: usize = 4;
const RANK: usize = 3;
const IN: usize = 6;
const OUT: usize = 5;

fn values(len: usize, seed: f32) -> Vec<f32> {
    (0..len)
        .map(|i| (i as f32).mul_add(0.29, seed).cos() * 0.4)
        .collect()
}

#[test]
fn both_frameworks_compute_every_expert_alike() {
    let weight = values(EXPERTS * OUT * IN, 0.1);
    let a = values(EXPERTS * RANK * IN, 0.7);
    let b = values(OUT * RANK * EXPERTS, 1.3);
    let x = values(7 * IN, 2.0);
    let scale = 12.0 / RANK as f64;

    let candle_tensor =
        |v: &[f32], shape: &[usize]| Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap();
    let mut candle =
        moduletree::candle::ExpertBank::new(candle_tensor(&weight, &[EXPERTS, OUT, IN])).unwrap();
    candle
        .add_adapter(
            "default",
            moduletree::candle::ExpertAdapter::new(
                candle_tensor(&a, &[EXPERTS * RANK, IN]),
                candle_tensor(&b, &[OUT, RANK * EXPERTS]),
                EXPERTS,
                12.0,
                false,
            )
            .unwrap(),
        )
        .unwrap();

    let device = BurnDevice::default();
    let burn_2d = |v: &[f32], shape: [usize; 2]| {
        BurnTensor::<2>::from_data(TensorData::new(v.to_vec(), shape), &device)
    };
    let mut burn = moduletree::burn::ExpertBank::new(BurnTensor::<3>::from_data(
        TensorData::new(weight.clone(), [EXPERTS, OUT, IN]),
        &device,
    ));
    burn.lora = Some(moduletree::burn::ExpertLora {
        a: Param::from_tensor(burn_2d(&a, [EXPERTS * RANK, IN])),
        b: Param::from_tensor(burn_2d(&b, [OUT, RANK * EXPERTS])),
        experts: EXPERTS,
        scale,
    });

    let candle_x = candle_tensor(&x, &[7, IN]);
    let burn_x = burn_2d(&x, [7, IN]);
    let compare = |candle: &moduletree::candle::ExpertBank,
                   burn: &moduletree::burn::ExpertBank,
                   what: &str| {
        for expert in 0..EXPERTS {
            let left = candle
                .forward_expert(expert, &candle_x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let right = burn
                .forward_expert(expert, burn_x.clone())
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let diff = left
                .iter()
                .zip(&right)
                .map(|(l, r)| (l - r).abs())
                .fold(0.0_f32, f32::max);
            assert!(diff < 1e-5, "{what}, expert {expert}: {diff}");
        }
    };
    compare(&candle, &burn, "unmerged");
    candle.merge().unwrap();
    let burn = burn.merge();
    assert!(burn.lora.is_none());
    compare(&candle, &burn, "merged");

    // Both are grouped_linear leaves and routed experts.
    let mut kinds = Vec::new();
    moduletree::walk(&burn, |node| kinds.push((node.kind(), node.is_expert())));
    assert_eq!(kinds, [(Some(moduletree::Kind::GroupedLinear), true)]);
    let _ = <moduletree::burn::ExpertBank as ModuleTree>::SCHEMA;
}
