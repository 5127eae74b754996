//! Runs a Hugging Face Mixtral, Qwen2-MoE or DeepSeek-V3 directory as transformers 5 holds it (routed experts
//! fused in banks), optionally with a PEFT LoRA adapter — `target_parameters` on the fused
//! experts, or a per-expert adapter trained on transformers 4, fused exactly at load — and prints
//! the logits of every position as one line of JSON.
//!
//! ```text
//! cargo run --release --example moe_lora -- [--model DIR] [--adapter DIR] [--merge] [--tokens 1,2,3]
//! ```
//!
//! Without `--model`, the tiny Mixtral shipped in `tests/fixtures/moe/mixtral/model` runs (and
//! `--tokens` defaults to `1,5,9,2,7,3`). Without `--merge` the adapter is attached (projection
//! slots and expert-bank adapters, applied at run time); with `--merge` it is folded into the
//! weights.

use std::path::PathBuf;
use std::process::ExitCode;

use candle_core::{Device, Tensor};
use candle_nn::Linear;
use clap::Parser;
use moduletree::candle::{LoadMode, LoraLinear, load_peft_adapter};
use moduletree_candle_examples::Projection;
use moduletree_candle_examples::cli::{AdapterArgs, SHIPPED_MIXTRAL, print_logits};
use moduletree_candle_examples::deepseek::DeepseekV3ForCausalLM;
use moduletree_candle_examples::moe::MoeForCausalLM;

/// Runs a Hugging Face Mixtral, Qwen2-MoE or DeepSeek-V3 directory (experts fused, as
/// transformers 5 holds them), optionally with a PEFT LoRA adapter, and prints the logits of
/// every position as one line of JSON.
#[derive(Debug, Parser)]
struct Args {
    /// The model directory (`config.json`, `model.safetensors`); the shipped tiny Mixtral if not
    /// given.
    #[arg(long, value_name = "DIR", default_value = SHIPPED_MIXTRAL)]
    model: PathBuf,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// The input token ids, comma-separated.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_value = "1,5,9,2,7,3")]
    tokens: Vec<u32>,
}

/// Loads the model with projections `P`, loads the adapter (if any) in `mode`, and runs it.
fn run<P: Projection>(args: &Args, mode: LoadMode) -> Result<Tensor, Box<dyn std::error::Error>> {
    let file = args.model.join("config.json");
    let text = std::fs::read_to_string(&file)
        .map_err(|error| format!("cannot read `{}`: {error}", file.display()))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| format!("`{}`: {error}", file.display()))?;
    if config["model_type"] == "deepseek_v3" {
        let mut model = DeepseekV3ForCausalLM::<P>::load(&args.model, &Device::Cpu)?;
        if let Some(adapter) = &args.adapter.adapter {
            load_peft_adapter(&mut model, adapter, mode)?;
        }
        return Ok(model.forward(&args.tokens)?);
    }
    let mut model = MoeForCausalLM::<P>::load(&args.model, &Device::Cpu)?;
    if let Some(adapter) = &args.adapter.adapter {
        load_peft_adapter(&mut model, adapter, mode)?;
    }
    Ok(model.forward(&args.tokens)?)
}

fn main() -> ExitCode {
    let args = Args::parse();
    print_logits(match args.adapter.mode() {
        LoadMode::Merge => run::<Linear>(&args, LoadMode::Merge),
        mode => run::<LoraLinear>(&args, mode),
    })
}
