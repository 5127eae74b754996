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
use moduletree::candle::{LoadMode, LoraLinear, load_peft_adapter};
use moduletree_candle_examples::Projection;
use moduletree_candle_examples::deepseek::DeepseekV3ForCausalLM;
use moduletree_candle_examples::moe::MoeForCausalLM;

const USAGE: &str = "usage: moe_lora [--model DIR] [--adapter DIR] [--merge] [--tokens 1,2,3]";

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
    let model = model.unwrap_or_else(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = root
            .parent()
            .and_then(std::path::Path::parent)
            .unwrap_or(root);
        let shipped = root.join("tests/fixtures/moe/mixtral/model");
        eprintln!(
            "no --model given: running the tiny Mixtral in {}",
            shipped.display()
        );
        shipped
    });
    let tokens = tokens.unwrap_or_else(|| vec![1, 5, 9, 2, 7, 3]);
    if tokens.is_empty() {
        return Err("`--tokens` lists no token".to_owned());
    }
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
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(args.model.join("config.json"))?)?;
    if config["model_type"] == "deepseek_v3" {
        let mut model = DeepseekV3ForCausalLM::<P>::load(&args.model, &Device::Cpu)?;
        if let Some(adapter) = &args.adapter {
            load_peft_adapter(&mut model, adapter, mode)?;
        }
        return Ok(model.forward(&args.tokens)?);
    }
    let mut model = MoeForCausalLM::<P>::load(&args.model, &Device::Cpu)?;
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
