//! What the example binaries share: the adapter options and the one line of JSON the runners
//! (`llama_lora`, `moe_lora`) print, and the tiny Mixtral the MoE examples run by default.

use std::path::PathBuf;
use std::process::ExitCode;

use candle_core::Tensor;
use moduletree::candle::LoadMode;

/// The tiny Mixtral shipped with the tests (`tests/fixtures/moe/mixtral/model`), which the MoE
/// examples run when no model is given, so that nothing is downloaded.
pub const SHIPPED_MIXTRAL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/moe/mixtral/model"
);

/// The tiny Llama shipped with the tests (`tests/fixtures/llama_tiny/model`), which the Llama
/// examples run when no model is given.
pub const SHIPPED_LLAMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/llama_tiny/model"
);

/// How to load an adapter, if any.
#[derive(Debug, clap::Args)]
pub struct AdapterArgs {
    /// A PEFT adapter directory (`adapter_config.json`, `adapter_model.safetensors`).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Fold the adapter into the weights of a model without LoRA slots, instead of attaching it.
    #[arg(long)]
    pub merge: bool,
}

impl AdapterArgs {
    /// [`LoadMode::Merge`] with `--merge`, else [`LoadMode::Attach`].
    #[must_use]
    pub fn mode(&self) -> LoadMode {
        if self.merge {
            LoadMode::Merge
        } else {
            LoadMode::Attach
        }
    }
}

/// Prints `logits`, `[positions, vocab]`, as `{"logits": [[…], …]}` on one line, or the error on
/// stderr.
///
/// # Errors
///
/// [`ExitCode::FAILURE`] when the run failed or the logits are not a matrix.
pub fn print_logits(logits: Result<Tensor, Box<dyn std::error::Error>>) -> ExitCode {
    // `Vec<f32>` serializes as the shortest decimals that round-trip to the same float32.
    let json = logits.and_then(|logits| Ok(serde_json::to_string(&logits.to_vec2::<f32>()?)?));
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
