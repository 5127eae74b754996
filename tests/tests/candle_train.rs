//! Training adapters: a few optimizer steps over the `VarMap` that `apply_lora` filled lower the
//! loss of a synthetic task, and leave every base weight bit-for-bit as it was.
#![cfg(feature = "candle")]

mod candle_common;
mod fixture_common;

use candle_common::{load, snapshot};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use moduletree::candle::{LoraConfig, LoraLinear, apply_lora, set_lora_training};

/// The entries of a snapshot that are base weights (not adapters, not slot state).
fn base_weights(entries: Vec<(String, Vec<f32>)>) -> Vec<(String, Vec<f32>)> {
    entries
        .into_iter()
        .filter(|(name, _)| {
            name.ends_with(" base") || name.ends_with(" weight") || name.ends_with(" table")
        })
        .collect()
}

#[test]
fn adapters_train_and_base_weights_stay_put() {
    let mut model = load::<LoraLinear>("model");
    let before = base_weights(snapshot(&model));
    assert_eq!(
        before.len(),
        2 * 7 + 1 + 1,
        "14 projections, the head, the embeddings"
    );

    let mut config = LoraConfig::new(4, 8.0).with_target_modules(["q_proj", "v_proj", "down_proj"]);
    config.lora_dropout = 0.1;
    let varmap = VarMap::new();
    let adapted: Vec<String> = apply_lora(&mut model, &config, &varmap)
        .unwrap()
        .into_iter()
        .map(|layer| layer.path)
        .collect();
    assert_eq!(
        adapted,
        [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.v_proj",
            "model.layers.0.mlp.down_proj",
            "model.layers.1.self_attn.q_proj",
            "model.layers.1.self_attn.v_proj",
            "model.layers.1.mlp.down_proj",
        ]
    );
    assert_eq!(set_lora_training(&mut model, true), 14);

    // Synthetic task: learn a fixed next-token sequence.
    let tokens = [3u32, 17, 8, 25, 1, 30, 12, 4];
    let params = ParamsAdamW {
        lr: 0.05,
        weight_decay: 0.0,
        ..ParamsAdamW::default()
    };
    let mut optimizer = AdamW::new(varmap.all_vars(), params).unwrap();
    let initial = model
        .next_token_loss(&tokens)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    for _ in 0..12 {
        let loss = model.next_token_loss(&tokens).unwrap();
        optimizer.backward_step(&loss).unwrap();
    }
    set_lora_training(&mut model, false);
    let last = model
        .next_token_loss(&tokens)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(last < 0.8 * initial, "loss {initial} -> {last}");

    // only the adapters moved
    assert_eq!(base_weights(snapshot(&model)), before);
    let mut trained = 0;
    moduletree::walk(&model, |node| {
        if let Some(slot) = node.downcast_ref::<LoraLinear>()
            && let Some((_, adapter)) = slot.active_adapter()
        {
            let b = adapter
                .b()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(b > 0.0, "{}: B left the zero init", node.path());
            trained += 1;
        }
    });
    assert_eq!(trained, 6);
}
