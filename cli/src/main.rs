//! `moduletree`: what a model type, a checkpoint or a PEFT adapter holds, read from headers alone;
//! adapters merged into checkpoints shard by shard; parallel plans of a model type.
//!
//! ```sh
//! moduletree inspect                                    # the model types this command knows
//! moduletree inspect MixtralForCausalLM                 # a type's tree, targets and experts
//! moduletree inspect --checkpoint model.safetensors.index.json [--target q_proj]
//! moduletree inspect --adapter adapter/ [--checkpoint base/ | MixtralForCausalLM]
//! moduletree merge --checkpoint base/ --adapter adapter/ --out merged/
//! moduletree plan MixtralForCausalLM --tp 8 --ep 16
//! ```
//!
//! Every `inspect` form takes `--json`. Errors go to stderr with exit status 1; an adapter that
//! would not load is reported on stdout with exit status 1; bad arguments exit with status 2.
//! Target entries use the crate's grammar: a name or dotted tail of names (`q_proj`,
//! `mlp.down_proj`), `<>` any index, `*` any one segment, `**` any run, `^` anchored at the
//! root, `re:` a regex over the whole path, and the shorthands `all-linear`, `all-embedding`,
//! `all-router`, `all-experts`, `all-shared-experts`.

mod adapter;
mod inspect;
mod merge;
mod models;
mod output;
mod plan;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Inspect model types, checkpoints and PEFT adapters from their headers; merge adapters into
/// checkpoints; plan tensor and expert parallelism.
#[derive(Parser)]
#[command(name = "moduletree", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// What a model type, a checkpoint or an adapter holds (no weights are read).
    Inspect(InspectArgs),
    /// Merge a PEFT adapter into a safetensors checkpoint, shard by shard.
    Merge(MergeArgs),
    /// A model type's tensor- and expert-parallel plan.
    Plan(plan::PlanArgs),
}

#[derive(Args)]
struct InspectArgs {
    /// A model type this command knows (`MixtralForCausalLM`, or a full path); with no name, no
    /// checkpoint and no adapter, the known types are listed.
    #[arg(conflicts_with = "checkpoint")]
    name: Option<String>,
    /// A checkpoint: a `.safetensors` file, a `model.safetensors.index.json` (its shards may be
    /// absent), a `.gguf` file, or a directory holding `model.safetensors.index.json` or
    /// `model.safetensors`.
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,
    /// A PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`); with a
    /// checkpoint or a type, whether it would load into it (exit status 1 when it would not).
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
    /// Target entries to resolve against the type or checkpoint; repeat or separate with commas
    /// (a `re:` entry runs to the end of its argument, so that its regex may hold commas).
    /// A name or dotted tail (`q_proj`, `mlp.down_proj`), `<>` any index, `*` any segment, `**`
    /// any run, `^` anchored, `re:` a regex, or `all-linear`, `all-embedding`, `all-router`,
    /// `all-experts`, `all-shared-experts`.
    #[arg(long, value_name = "ENTRY", conflicts_with = "adapter")]
    target: Vec<String>,
    /// Keep only the targets inside this tower of a checkpoint: its path (`vision_tower`), its
    /// kind (`vision`, `language`, `projector`, `audio`, `mtp`), or `(the rest)` for the layers
    /// outside every other tower.
    #[arg(long, value_name = "PATH", requires = "target")]
    tower: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct MergeArgs {
    /// The base checkpoint: a directory, a `model.safetensors.index.json` or a `.safetensors`
    /// file; every shard must be present.
    #[arg(long, value_name = "PATH")]
    checkpoint: PathBuf,
    /// The PEFT adapter directory.
    #[arg(long, value_name = "DIR")]
    adapter: PathBuf,
    /// The directory to write the merged checkpoint to (not the checkpoint's own).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Command::Inspect(args) = &mut cli.command {
        args.target = split_entries(&args.target);
    }
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Merge(args) => merge::run(&args),
        Command::Plan(args) => plan::run(&args),
    };
    match result {
        Ok(text) => output::print(&text),
        // A report whose answer is "no" (an adapter that would not load) is printed whole.
        Err(error) => match error.downcast::<output::Refused>() {
            Ok(refused) => {
                output::print(&refused.0);
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("error: {}", output::printable(&error.to_string()));
                ExitCode::FAILURE
            }
        },
    }
}

/// The entries of `--target` arguments: each split on commas, except that a `re:` (or `?re:`)
/// entry runs to the end of its argument (`re:.*\.[0-9]{1,2}\.q_proj` is one entry).
fn split_entries(arguments: &[String]) -> Vec<String> {
    let mut entries = Vec::new();
    for argument in arguments {
        let mut rest = argument.as_str();
        loop {
            // `re:` and `?re:` (an optional regex) take the rest of the argument.
            let start = rest.trim_start();
            if start.strip_prefix('?').unwrap_or(start).starts_with("re:") {
                entries.push(start.to_owned());
                break;
            }
            match rest.split_once(',') {
                Some((entry, after)) => {
                    entries.push(entry.to_owned());
                    rest = after;
                }
                None => {
                    entries.push(rest.to_owned());
                    break;
                }
            }
        }
    }
    entries
}
