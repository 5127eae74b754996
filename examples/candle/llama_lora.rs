//! Runs a Hugging Face Llama directory, optionally with a PEFT LoRA adapter, and prints the
//! logits of every position as one line of JSON.
//!
//! ```text
//! cargo run --release --example llama_lora -- [--model DIR] [--adapter DIR] [--merge] --tokens 1,2,3
//! ```
//!
//! Without `--model`, the tiny Llama shipped with the tests (`tests/fixtures/llama_tiny/model`),
//! whose adapters sit beside it (`--adapter tests/fixtures/llama_tiny/adapter`).
//!
//! Without `--merge` the adapter is attached to `LoraLinear` slots and applied at run time; with
//! `--merge` it is folded into the plain `candle_nn::Linear` weights of a model without slots.

use std::path::PathBuf;
use std::process::ExitCode;

use candle_core::{Device, Tensor};
use candle_nn::Linear;
use clap::Parser;
use moduletree::candle::{LoadMode, LoraLinear, load_peft_adapter};
use moduletree_candle_examples::Projection;
use moduletree_candle_examples::cli::{AdapterArgs, SHIPPED_LLAMA, print_logits};
use moduletree_candle_examples::llama::LlamaForCausalLM;

/// Runs a Hugging Face Llama directory, optionally with a PEFT LoRA adapter, and prints the
/// logits of every position as one line of JSON.
#[derive(Debug, Parser)]
struct Args {
    /// The model directory (`config.json`, `model.safetensors`); the tiny Llama shipped with the
    /// tests by default.
    #[arg(long, value_name = "DIR", default_value = SHIPPED_LLAMA)]
    model: PathBuf,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// The input token ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    tokens: Vec<u32>,
}

/// Loads the model with projections `P`, loads the adapter (if any) in `mode`, and runs it.
fn run<P: Projection>(args: &Args, mode: LoadMode) -> Result<Tensor, Box<dyn std::error::Error>> {
    let mut model = LlamaForCausalLM::<P>::load(&args.model, &Device::Cpu)?;
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
