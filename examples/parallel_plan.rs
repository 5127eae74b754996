//! Prints the parallel plan of a registered model type: transformers' `base_model_tp_plan` and
//! `base_model_ep_plan`, DeepSpeed AutoTP's `partition_config`, or the plan itself with every
//! layer's LoRA placement, from the type alone.
//!
//! ```sh
//! cargo run --example parallel_plan                                   # the model types
//! cargo run --example parallel_plan -- MixtralForCausalLM --tp 8 --ep 16
//! cargo run --example parallel_plan -- DeepseekV3ForCausalLM --tp 4 --format plan
//! ```

mod parallel_models;

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use moduletree::parallel::{ParallelConfig, ParallelPlan};
use moduletree::registry;
use serde_json::json;

/// The plan of a model type over tensor-, expert- and expert-tensor-parallel ranks.
#[derive(Parser)]
struct Args {
    /// The model type (`MixtralForCausalLM`, or a full path); none lists the types.
    name: Option<String>,
    /// Tensor-parallel size.
    #[arg(long, default_value_t = 1)]
    tp: usize,
    /// Expert-parallel size.
    #[arg(long, default_value_t = 1)]
    ep: usize,
    /// Expert-tensor-parallel size.
    #[arg(long, default_value_t = 1)]
    etp: usize,
    /// The base model's path in the tree, for transformers' plans.
    #[arg(long, default_value = "model")]
    base: String,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Format::Transformers)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// transformers' `base_model_tp_plan`, `base_model_ep_plan` and the task model's `_tp_plan`.
    Transformers,
    /// DeepSpeed AutoTP's `tensor_parallel` configuration.
    Deepspeed,
    /// The plan: every layer pattern's weight and LoRA placement, and the experts' owners.
    Plan,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(name) = &args.name else {
        for registration in registry::top_level() {
            println!("{}", registration.full_name());
        }
        return ExitCode::SUCCESS;
    };
    let registration = match registry::find_one(name) {
        Ok(registration) => registration,
        Err(error) => {
            eprintln!("parallel_plan: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = ParallelConfig::new(args.tp, args.ep, args.etp);
    let printed = ParallelPlan::builder(config)
        .build(registration.schema)
        .and_then(|plan| match args.format {
            Format::Transformers => plan.transformers(&args.base).map(|plans| {
                json!({
                    "base_model_tp_plan": plans.base_model_tp_plan,
                    "base_model_ep_plan": plans.base_model_ep_plan,
                    "_tp_plan": plans.tp_plan,
                    "_ep_plan": plans.ep_plan,
                })
            }),
            Format::Deepspeed => plan.deepspeed_autotp(),
            Format::Plan => Ok(plan.to_json()),
        });
    match printed {
        Ok(value) => {
            println!("{value:#}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("parallel_plan: {name}: {error}");
            ExitCode::FAILURE
        }
    }
}
