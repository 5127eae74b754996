//! Runs candle-transformers' own Llama or Mixtral (its code unmodified) with a PEFT LoRA adapter
//! merged into the weights at load, and prints the logits of every position as one line of JSON.
//!
//! ```text
//! cargo run --release --example candle_transformers_lora -- --model DIR [--adapter DIR] --tokens 1,2,3
//! ```
//!
//! Without `--model`, the tiny Llama shipped with the tests (`tests/fixtures/llama_tiny/model`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use moduletree_candle_examples::cli::{SHIPPED_LLAMA, print_logits};
use moduletree_candle_examples::transformers::logits;

/// Runs candle-transformers' Llama or Mixtral with a PEFT adapter merged in at load.
#[derive(Debug, Parser)]
struct Args {
    /// The model directory (`config.json`, `model.safetensors`) of a `LlamaForCausalLM` or
    /// `MixtralForCausalLM`; the shipped tiny Llama by default.
    #[arg(long, value_name = "DIR", default_value = SHIPPED_LLAMA)]
    model: PathBuf,
    /// A PEFT adapter directory (`adapter_config.json`, `adapter_model.safetensors`).
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
    /// The input token ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    tokens: Vec<u32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    print_logits(
        logits(&args.model, args.adapter.as_deref(), &args.tokens)
            .map_err(|error| -> Box<dyn std::error::Error> { error }),
    )
}
