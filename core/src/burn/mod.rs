//! burn integration (feature `burn`, burn 0.22): burn-nn's layers in the module tree, burn
//! `ParamGroup`s from layer selections for burn's own LoRA, and PEFT adapter files.
//!
//! - `#[derive(Module, ModuleTree)]` on one struct needs no extra marks: fields burn skips
//!   (`#[module(skip)]`) are skipped, parameters and tensors add no node, and the tree's paths
//!   are burn's record paths without enum variant names ([`PathMap`], [`record_to_tree_path`]).
//! - burn-nn's `Linear`, `Embedding`, convolutions and norms are leaves of their kinds;
//!   `MultiHeadAttention` walks into `query`, `key`, `value`, `output` ([`layers`]).
//! - [`LoraSelection`] turns layer paths into the `ParamGroup` for
//!   `model.apply_lora(Lora::new(r, alpha).set_param_group(group))`; [`LoraPlan`] gives layers
//!   their own rank and alpha.
//! - [`load_peft_adapter`] / [`save_peft_adapter`] read and write, for `Linear`, `Embedding` and
//!   [`ExpertBank`] layers, PEFT's `adapter_config.json` + `adapter_model.safetensors` (burn's
//!   `[in, out]` weights against PEFT's `[out, in]`); [`apply_lora`] attaches fresh adapters to
//!   the layers a [`LoraConfig`] selects.

mod bank;
mod error;
pub mod layers;
mod lifecycle;
mod lora;
mod paths;
mod peft;
mod save;

pub use crate::peft::{
    AdaptedLayer, LayerStatus, LoadMode, LoraConfig, ParameterCounts, PeftError, PerExpertNames,
};
pub use bank::{ExpertBank, ExpertLora};
pub use error::BurnError;
pub use lifecycle::{adapter_status, lora_factor_groups, parameter_counts};
pub use lora::{LoraPlan, LoraSelection, PlanGroup, SelectedLayer, apply_lora, plan_lora};
pub use paths::{ParamPath, PathMap, record_to_tree_path};
pub use paths::{lora_factor_to_peft_key, peft_key_to_lora_factor};
pub use peft::{load_adapter, load_peft_adapter};
pub use save::{save_peft_adapter, save_peft_adapter_per_expert};
