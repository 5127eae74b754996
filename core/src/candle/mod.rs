//! candle integration: candle-nn layers as leaves, LoRA slots that train and merge, and PEFT
//! adapters in and out.
//!
//! - [`candle_nn::Linear`], [`Embedding`](candle_nn::Embedding), [`Conv1d`](candle_nn::Conv1d),
//!   [`Conv2d`](candle_nn::Conv2d), [`LayerNorm`](candle_nn::LayerNorm) and
//!   [`RmsNorm`](candle_nn::RmsNorm) are leaf layers of their kinds; a [`candle_core::Tensor`] or
//!   [`candle_core::Var`] is a parameter, not a module. A wrapper of the user's own becomes a leaf
//!   that delegates to its inner layer with [`delegate_layer!`](crate::delegate_layer).
//! - [`LoraLinear`] and [`LoraEmbedding`] are slots a model declares once: a base layer plus zero
//!   or more named [`LoraAdapter`]s, one active, with `merge` / `unmerge`.
//! - [`apply_lora`] attaches fresh trainable adapters to every layer a [`LoraConfig`] selects
//!   (slots and [`ExpertBank`]s), as variables of a `VarMap` under PEFT's names.
//! - [`load_peft_adapter`] reads PEFT's `adapter_config.json` + `adapter_model.safetensors` into
//!   slots ([`LoadMode::Attach`]) or folds it into plain weights ([`LoadMode::Merge`]);
//!   [`save_peft_adapter`] writes them back in PEFT's layout.
//!
//! Every operation that changes a model first checks everything it will do, then computes every
//! new tensor, and only then writes: on any error the model is exactly as it was.

mod adapter;
mod apply;
mod bank;
mod error;
mod leaves;
mod lifecycle;
mod lora;
mod parallel;
mod peft;
mod save;
mod sites;
mod store;
mod weights;
mod weights_tree;

pub use crate::peft::{
    AdaptedLayer, LayerStatus, LoadMode, LoraConfig, ParameterCounts, PeftError, PerExpertNames,
    TargetModules,
};
pub use adapter::LoraAdapter;
pub use apply::{LoraTarget, apply_lora, apply_lora_as, apply_lora_to};
pub use bank::{ExpertAdapter, ExpertBank};
pub use error::LoraError;
pub use lifecycle::{
    LoraFactorVars, adapter_status, disable_adapters, enable_adapters, lora_factor_vars,
    merge_adapters, parameter_counts, unmerge_adapters,
};
pub use lora::{DEFAULT_ADAPTER, LoraEmbedding, LoraLinear, set_lora_training};
pub use parallel::layer_shape;
pub use peft::{load_adapter, load_peft_adapter, load_peft_adapter_as};
pub use save::{save_peft_adapter, save_peft_adapter_named, save_peft_adapter_per_expert};
pub use weights::{PeftWeights, Reads};
