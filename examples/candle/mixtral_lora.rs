//! LoRA on a Mixtral whose routed experts are fused in banks, as transformers 5 holds them:
//! adapt attention and the fused experts (`target_parameters`, PEFT's `ParamWrapper` layout),
//! train a few steps, save in PEFT's format, and load the adapter back both attached and merged
//! into a model without slots.
//!
//! ```text
//! cargo run --release --example mixtral_lora [-- DIR]
//! ```
//!
//! Without `DIR`, the tiny Mixtral shipped in `tests/fixtures/moe/mixtral/model` is used, so
//! nothing is downloaded. Prints one line of JSON.

use std::error::Error;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Linear, Optimizer, ParamsAdamW, VarMap};
use moduletree::candle::{
    LoadMode, LoraConfig, LoraLinear, apply_lora, load_peft_adapter, save_peft_adapter,
};
use moduletree_candle_examples::cli::SHIPPED_MIXTRAL;
use moduletree_candle_examples::llama::next_token_loss;
use moduletree_candle_examples::moe::MoeForCausalLM;

fn max_abs_diff(left: &Tensor, right: &Tensor) -> Result<f32, Box<dyn Error>> {
    Ok((left - right)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let device = Device::Cpu;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from(SHIPPED_MIXTRAL), PathBuf::from);
    let mut model = MoeForCausalLM::<LoraLinear>::load(&dir, &device)?;

    // The fused banks are routed experts by kind; the router is not adapted.
    let experts = moduletree::set_linear_is_expert(&mut model);

    // Attention and the fused experts, the experts with a larger rank (their pattern keys match
    // `<module>.<parameter>`, as PEFT matches them).
    let mut lora = LoraConfig::new(4, 8.0).with_target_modules(["q_proj", "v_proj"]);
    lora.target_parameters = Some(vec![
        "mlp.experts.gate_up_proj".to_owned(),
        "mlp.experts.down_proj".to_owned(),
    ]);
    lora.rank_pattern
        .insert("experts.gate_up_proj".to_owned(), 8);
    lora.alpha_pattern
        .insert("experts.gate_up_proj".to_owned(), 16.0);
    // What the config selects, resolved without touching the model: anything that deserves a
    // look (an exclusion that excluded nothing, a pattern that matched no layer) is printed.
    for warning in lora.target_spec()?.resolve(&model)?.warnings() {
        eprintln!("warning: {warning}");
    }
    let varmap = VarMap::new();
    let adapted = apply_lora(&mut model, &lora, &varmap)?;
    // B starts at zero: give it a small value so that training moves every factor.
    for var in moduletree::candle::lora_factor_vars(&varmap).b {
        var.set(&(var.as_tensor().ones_like()? * 0.01)?)?;
    }

    // A few AdamW steps on a fixed sequence; only the adapters are variables.
    let tokens: Vec<u32> = (0..16).map(|i| (i * 7 + 3) % 32).collect();
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
        let loss = next_token_loss(&tokens, |inputs| model.forward(inputs))?;
        losses.push(loss.to_scalar::<f32>()?);
        optimizer.backward_step(&loss)?;
    }
    losses.push(next_token_loss(&tokens, |inputs| model.forward(inputs))?.to_scalar::<f32>()?);
    let trained = model.forward(&tokens)?;

    // Save in PEFT's layout, then load into fresh models: attached, and merged into plain weights.
    let scratch = tempfile::tempdir()?;
    let saved = scratch.path();
    save_peft_adapter(&model, saved, &lora)?;
    let mut attached = MoeForCausalLM::<LoraLinear>::load(&dir, &device)?;
    load_peft_adapter(&mut attached, saved, LoadMode::Attach)?;
    let mut merged = MoeForCausalLM::<Linear>::load(&dir, &device)?;
    load_peft_adapter(&mut merged, saved, LoadMode::Merge)?;
    let attached_diff = max_abs_diff(&attached.forward(&tokens)?, &trained)?;
    let merged_diff = max_abs_diff(&merged.forward(&tokens)?, &trained)?;

    println!(
        "{}",
        serde_json::json!({
            "expert_banks": experts.len(),
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
