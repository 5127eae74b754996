//! `moduletree plan`: a model type's plan over tensor-, expert- and expert-tensor-parallel
//! ranks: transformers' `base_model_tp_plan` / `base_model_ep_plan`, DeepSpeed AutoTP's
//! `partition_config`, or the plan itself with every layer's LoRA placement, from the type alone.

use clap::{Args, ValueEnum};
use moduletree::parallel::{ParallelConfig, ParallelPlan};
use moduletree::registry;
use serde_json::json;

use crate::output::{Failure, json};

#[derive(Args)]
pub struct PlanArgs {
    /// The model type (`MixtralForCausalLM`, or a full path); none lists the types. A type has
    /// no sizes, so the plan places every layer without checking that the sizes divide (the
    /// API's `ParallelPlan::builder(..).sizes(..)` checks them).
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

pub fn run(args: &PlanArgs) -> Result<String, Failure> {
    let Some(name) = &args.name else {
        let names: Vec<String> = registry::top_level()
            .iter()
            .map(|registration| format!("{}\n", registration.name))
            .collect();
        return Ok(names.concat());
    };
    let registration = registry::find_one(name)?;
    let config = ParallelConfig::new(args.tp, args.ep, args.etp);
    let plan = ParallelPlan::builder(config).build(registration.schema)?;
    let value = match args.format {
        Format::Transformers => {
            let plans = plan.transformers(&args.base)?;
            json!({
                "base_model_tp_plan": plans.base_model_tp_plan,
                "base_model_ep_plan": plans.base_model_ep_plan,
                "_tp_plan": plans.tp_plan,
                "_ep_plan": plans.ep_plan,
            })
        }
        Format::Deepspeed => plan.deepspeed_autotp()?,
        Format::Plan => plan.to_json(),
    };
    Ok(json(&value))
}
