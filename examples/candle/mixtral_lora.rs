//! Per-expert LoRA on a Mixtral-shaped mixture of experts: mark the experts, give attention
//! and every expert its own adapter, train a few steps, save in PEFT's format, and load the
//! adapter back both into slots and merged into a model without slots.
//!
//! ```text
//! cargo run --release --example mixtral_lora
//! ```
//!
//! The weights are generated in-process, so nothing is downloaded. Prints one line of JSON.

use std::error::Error;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use moduletree::candle::{
    LoadMode, LoraConfig, LoraLinear, apply_lora, load_peft_adapter, save_peft_adapter,
};
use moduletree_candle_examples::mixtral::{MixtralConfig, MixtralForCausalLM};

fn max_abs_diff(left: &Tensor, right: &Tensor) -> Result<f32, Box<dyn Error>> {
    Ok((left - right)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let device = Device::Cpu;
    let config = MixtralConfig::tiny();
    let weights = config.random_weights(42, &device)?;
    let base = || VarBuilder::from_tensors(weights.clone(), DType::F32, &device);
    let mut model = MixtralForCausalLM::<LoraLinear>::new(&base(), &config)?;

    // The experts' projections are flagged at run time; attention and the router are not.
    let experts = moduletree::set_linear_is_expert(&mut model);

    // Attention projections and every expert's w1/w2/w3, experts with a larger rank.
    let mut lora =
        LoraConfig::new(4, 8.0).with_target_modules(["q_proj", "v_proj", "w1", "w2", "w3"]);
    lora.rank_pattern.insert("w[123]".to_owned(), 8);
    lora.alpha_pattern.insert("w[123]".to_owned(), 16.0);
    let varmap = VarMap::new();
    let adapted = apply_lora(&mut model, &lora, &varmap)?;

    // A few AdamW steps on a fixed sequence; only the adapters are variables.
    let tokens: Vec<u32> = (0..16).map(|i| (i * 7 + 3) % 48).collect();
    let mut optimizer = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: 0.02,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    let mut losses = Vec::new();
    for _ in 0..8 {
        let loss = model.next_token_loss(&tokens)?;
        losses.push(loss.to_scalar::<f32>()?);
        optimizer.backward_step(&loss)?;
    }
    losses.push(model.next_token_loss(&tokens)?.to_scalar::<f32>()?);
    let trained = model.forward(&tokens)?;

    // Save in PEFT's layout, then load into fresh models: as slots, and merged into plain weights.
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    save_peft_adapter(&model, dir, &lora)?;
    let mut attached = MixtralForCausalLM::<LoraLinear>::new(&base(), &config)?;
    load_peft_adapter(&mut attached, dir, LoadMode::Attach)?;
    let mut merged = MixtralForCausalLM::<Linear>::new(&base(), &config)?;
    load_peft_adapter(&mut merged, dir, LoadMode::Merge)?;
    let attached_diff = max_abs_diff(&attached.forward(&tokens)?, &trained)?;
    let merged_diff = max_abs_diff(&merged.forward(&tokens)?, &trained)?;

    println!(
        "{}",
        serde_json::json!({
            "expert_linears": experts.len(),
            "adapted": adapted.len(),
            "first_adapted": adapted.iter().take(4).map(|layer| &layer.path).collect::<Vec<_>>(),
            "trainable_tensors": varmap.all_vars().len(),
            "losses": losses,
            "max_abs_diff_attached": attached_diff,
            "max_abs_diff_merged": merged_diff,
        })
    );
    Ok(())
}
