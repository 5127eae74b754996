//! Parallel plans proven on simulated ranks: the base and LoRA weights of Llama-, Mixtral-,
//! Qwen2-MoE- and DeepSeek-V3-shaped models are split by the plan over tp × ep × etp simulated
//! ranks, each rank runs its share of the forward with only its shards, the collectives the plan
//! names join the results, and the logits equal the unsharded model's (whose LoRA runs through
//! `LoraLinear`, `LoraEmbedding` and `ExpertBank` as in training). Also: the exported plans equal
//! transformers 5's own for each architecture (`fixtures/parallel`), and the trap of a
//! row-parallel expert projection whose adapter output is reduced twice.
#![cfg(feature = "candle")]

mod candle_common;
mod fixture_common;
mod parallel_common;

use std::collections::HashMap;

use candle_common::max_diff;
use moduletree::parallel::{Collective, ParallelConfig, ParallelPlan};
use parallel_common::{Arch, Sim, build, forward, reference_logits, sim_logits, toy};

const TOKENS: [u32; 6] = [3, 17, 5, 29, 11, 2];

fn plan_for(model: &impl moduletree::ModuleTree, config: ParallelConfig) -> ParallelPlan {
    ParallelPlan::builder(config)
        .sizes(moduletree::candle::layer_shape)
        .build(model)
        .unwrap_or_else(|error| panic!("{config:?}: {error}"))
}

#[test]
fn every_rank_combination_reproduces_the_unsharded_logits() {
    for arch in Arch::ALL {
        let model = build(arch);
        let expected = reference_logits(&model, &TOKENS);
        for tp in [1, 2, 4] {
            for ep in [1, 2, 4] {
                for etp in [1, 2] {
                    let config = ParallelConfig::new(tp, ep, etp);
                    let plan = plan_for(&model, config);
                    let found = sim_logits(&model, &plan, &TOKENS);
                    let diff = max_diff(&found, &expected);
                    assert!(diff < 1e-5, "{arch:?} tp={tp} ep={ep} etp={etp}: {diff}");
                }
            }
        }
    }
}

#[test]
fn every_style_on_a_toy_model_reproduces_the_unsharded_logits() {
    let model = toy::build();
    let expected = toy::reference_logits(&model, &TOKENS);
    for tp in [1, 2, 4] {
        let plan = plan_for(&model, ParallelConfig::new(tp, 1, 1));
        let found = toy::sim_logits(&model, &plan, &TOKENS);
        let diff = max_diff(&found, &expected);
        assert!(diff < 1e-5, "tp={tp}: {diff}");
    }
}

#[test]
fn reducing_a_partial_expert_adapter_twice_is_caught() {
    // The row-parallel `down_proj` of the experts leaves partial sums that the experts module
    // reduces with the base's. A plan that also reduced the adapter after `x·Aᵀ` (as
    // Megatron-Bridge does for expert LoRA) would add the adapter once per expert-tensor rank.
    let model = build(Arch::Mixtral);
    let expected = reference_logits(&model, &TOKENS);
    let plan = plan_for(&model, ParallelConfig::new(1, 2, 2));
    let down = "model.layers.0.mlp.experts.down_proj";
    let lora = plan.layer(down).and_then(|layer| layer.lora).unwrap();
    assert_eq!(lora.after_a, Collective::None);
    assert!(matches!(lora.after_b, Collective::Deferred(_)));
    let mut sim = Sim::of(&model, &plan);
    sim.edit(down, |layer| {
        let lora = layer.lora.as_mut().unwrap();
        lora.after_a = Collective::AllReduce(moduletree::parallel::Group::ExpertTensor);
    });
    let diff = max_diff(&forward(&model, &sim, &TOKENS), &expected);
    assert!(diff > 1e-3, "a double reduction went unnoticed: {diff}");

    // The other way round, on a dense row layer whose base reduces itself: an adapter whose
    // partial `x·Aᵀ` is never reduced loses the other ranks' share.
    let model = build(Arch::Llama);
    let expected = reference_logits(&model, &TOKENS);
    let plan = plan_for(&model, ParallelConfig::new(2, 1, 1));
    let mut sim = Sim::of(&model, &plan);
    sim.edit("model.layers.0.self_attn.o_proj", |layer| {
        layer.lora.as_mut().unwrap().after_a = Collective::None;
    });
    let diff = max_diff(&forward(&model, &sim, &TOKENS), &expected);
    assert!(diff > 1e-3, "a missing reduction went unnoticed: {diff}");
}

#[test]
fn exported_plans_equal_transformers_own() {
    let fixtures = fixture_common::transformers_plans();
    for arch in Arch::ALL {
        let model = build(arch);
        let plans = plan_for(&model, ParallelConfig::new(2, 2, 1))
            .transformers("model")
            .unwrap();
        let expected = &fixtures[arch.transformers_name()];
        let as_json =
            |map: &std::collections::BTreeMap<String, String>| serde_json::to_value(map).unwrap();
        assert_eq!(
            as_json(&plans.base_model_tp_plan),
            expected["base_model_tp_plan"],
            "{arch:?}"
        );
        assert_eq!(
            as_json(&plans.base_model_ep_plan),
            expected["base_model_ep_plan"],
            "{arch:?}"
        );
        assert_eq!(as_json(&plans.tp_plan), expected["tp_plan"], "{arch:?}");
        assert!(plans.ep_plan.is_empty());
    }
}

#[test]
fn experts_are_dealt_out_by_index_and_replicated_adapters_are_synced() {
    let model = build(Arch::Qwen2Moe);
    let plan = plan_for(&model, ParallelConfig::new(2, 4, 2));
    let owners: HashMap<&str, (bool, Option<usize>, Option<usize>)> = plan
        .experts()
        .iter()
        .map(|owner| {
            (
                owner.path.as_str(),
                (owner.fused, owner.experts, owner.per_rank),
            )
        })
        .collect();
    assert_eq!(
        owners["model.layers.1.mlp.experts"],
        (true, Some(8), Some(2))
    );
    // Shared experts and every other layer outside the routed experts are replicated across the
    // expert group, whose ranks see different tokens: their factors' gradients are all-reduced
    // there, and `lora_A` broadcast once.
    let shared = plan
        .layer("model.layers.1.mlp.shared_expert.up_proj")
        .unwrap();
    let syncs = &shared.lora.as_ref().unwrap().sync;
    assert!(
        syncs
            .iter()
            .any(|sync| sync.group == moduletree::parallel::Group::Expert
                && sync.factor == moduletree::parallel::Factor::A
                && sync.broadcast)
    );
    let routed = plan
        .layer("model.layers.1.mlp.experts.gate_up_proj")
        .unwrap();
    assert!(
        routed
            .lora
            .as_ref()
            .unwrap()
            .sync
            .iter()
            .all(|sync| sync.group != moduletree::parallel::Group::Expert)
    );
}
