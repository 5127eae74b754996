//! Runs a Hugging Face Llama directory, optionally with a PEFT LoRA adapter, and prints the
//! logits of every position as one line of JSON.
//!
//! ```text
//! cargo run --release --example llama_lora -- --model DIR [--adapter DIR] [--merge] --tokens 1,2,3
//! ```
//!
//! Without `--merge` the adapter is attached to `LoraLinear` slots and applied at run time; with
//! `--merge` it is folded into the plain `candle_nn::Linear` weights of a model without slots.

use std::path::PathBuf;
use std::process::ExitCode;

use candle_core::{Device, Tensor};
use candle_nn::Linear;
use moduletree::candle::{LoadMode, LoraLinear, load_peft_adapter};
use moduletree_candle_examples::Projection;
use moduletree_candle_examples::llama::LlamaForCausalLM;

const USAGE: &str = "usage: llama_lora --model DIR [--adapter DIR] [--merge] --tokens 1,2,3";

struct Args {
    model: PathBuf,
    adapter: Option<PathBuf>,
    merge: bool,
    tokens: Vec<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut adapter, mut merge, mut tokens) = (None, None, false, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("`{name}` needs a value"));
        match arg.as_str() {
            "--model" => model = Some(PathBuf::from(value("--model")?)),
            "--adapter" => adapter = Some(PathBuf::from(value("--adapter")?)),
            "--merge" => merge = true,
            "--tokens" => {
                let list = value("--tokens")?;
                let parsed = list
                    .split(',')
                    .map(|token| token.trim().parse::<u32>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| format!("`--tokens {list}`: {error}"))?;
                tokens = Some(parsed);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let model = model.ok_or("`--model DIR` is required")?;
    let tokens = tokens
        .filter(|tokens| !tokens.is_empty())
        .ok_or("`--tokens 1,2,3` is required")?;
    Ok(Args {
        model,
        adapter,
        merge,
        tokens,
    })
}

fn logits(args: &Args) -> Result<Tensor, Box<dyn std::error::Error>> {
    if args.merge {
        run::<Linear>(args, LoadMode::Merge)
    } else {
        run::<LoraLinear>(args, LoadMode::Attach)
    }
}

/// Loads the model with projections `P`, loads the adapter (if any) in `mode`, and runs it.
fn run<P: Projection>(args: &Args, mode: LoadMode) -> Result<Tensor, Box<dyn std::error::Error>> {
    let mut model = LlamaForCausalLM::<P>::load(&args.model, &Device::Cpu)?;
    if let Some(adapter) = &args.adapter {
        load_peft_adapter(&mut model, adapter, mode)?;
    }
    Ok(model.forward(&args.tokens)?)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // `Vec<f32>` serializes as the shortest decimals that round-trip to the same float32.
    let json =
        logits(&args).and_then(|logits| Ok(serde_json::to_string(&logits.to_vec2::<f32>()?)?));
    match json {
        Ok(rows) => {
            println!("{{\"logits\": {rows}}}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
