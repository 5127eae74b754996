//! PEFT's LoRA adapter format, framework-free: the one set of rules by which candle and burn
//! read, check and write adapters, so that one adapter directory means one model in both.
//!
//! - [`names`]: the file names and the grammar of tensor names (PEFT 0.21's
//!   `peft/utils/save_and_load.py`).
//! - [`LoraConfig`]: `adapter_config.json` typed (PEFT 0.21's `peft/tuners/lora/config.py`),
//!   unknown fields kept; [`LoraConfig::validate`] is the one validation and [`Refusal`] the one
//!   list of options this crate refuses; [`LoraConfig::target_spec`] is the selection the config
//!   implies (`target_modules`, `exclude_modules`, `layers_to_transform`, `layers_pattern`,
//!   `modules_to_save`, `rank_pattern`, `alpha_pattern`).
//! - [`Adapter`]: a directory read into memory; [`Adapter::plan`] checks it against a model whose
//!   layers the framework describes ([`LayerInfo`]) and returns a [`LoadPlan`], or the first
//!   problem as a [`PeftError`]. The selection decides what loads: a tensor outside it is refused
//!   with the option that leaves it out named, and a selected layer without tensors is refused.
//! - [`write_adapter`]: writes factors and whole parameters back in PEFT's layout.
//!
//! The frameworks keep only what is theirs: converting [`RawTensor`]s and installing them
//! (`moduletree::candle::load_peft_adapter`, `moduletree::burn::load_peft_adapter`, both with
//! [`LoadMode`] and returning [`PeftError`]).
//!
//! # Modules saved whole
//!
//! `modules_to_save` names modules PEFT trains and saves whole (a classifier head, `lm_head`).
//! No LoRA is ever placed at or below them (PEFT's `check_target_module_exists` excludes any
//! path in which a saved name stands as a run of whole segments), and their leaf layers'
//! parameters are stored as `base_model.model.<path>.weight` / `.bias`. Loading replaces those
//! layers' parameters with the stored ones in both modes: a module saved whole is part of the
//! adapter, not a delta on the base.
//!
//! With `ensure_weight_tying` (PEFT 0.21, for `tie_word_embeddings`), PEFT saves an adapted
//! input embedding's factors, transposed, under the tied output head's name too, though
//! `target_modules` names only the embedding; such a head is selected with the embedding's rank
//! and alpha. The frameworks here keep the head's and the embedding's matrices apart, so merging
//! adds the delta once to each: PyTorch's *unmerged* logits (PEFT 0.21.2's `merge_and_unload`
//! adds it twice to the one shared matrix).
//!
//! PEFT also saves whole copies of the embedding layers of an adapter that targets one
//! (`save_embedding_layers`, keys `base_model.model.<path>.base_layer.weight`); they are loaded
//! the same way, replacing the layer's weight.
//!
//! # Deliberate departures from PEFT 0.21
//!
//! - **Every entry must match.** PEFT errors only when nothing at all matches; here an entry of
//!   `target_modules` that matches no layer, and a `modules_to_save` name that matches no
//!   module, are errors (PEFT silently adapts less than the file says).
//! - **The layer filter applies to every entry**, full-path entries included, and a layer list
//!   at the root is indexed (PEFT's `.*?\.[^.]*\.(\d+)\.` needs two segments before the index);
//!   with `layers_pattern`, PEFT's own regex is used.
//! - **The most specific rank or alpha key wins**, not the first in insertion order (see
//!   [`Pattern::specificity`](crate::target::Pattern::specificity)).
//! - **Names match by whole segments**: a list entry or a `modules_to_save` name that is a
//!   plain dotted name never matches inside a segment (PEFT's `_set_trainable` uses a raw
//!   `str.endswith`, so `lm_head` also saves `xlm_head`).
//! - **Tensors are checked, not skipped**: PEFT loads with `strict=False` and warns about
//!   unexpected and missing keys; here both are refused by name.
//! - **Digit segments of patterns are indices**: a `target_modules` or `rank_pattern` key
//!   `layers.001.q_proj` matches layer 1 (PEFT compares strings). Tensor names are not: a factor
//!   stored for `layers.001.q_proj` names no module of a model whose list index is written `1`,
//!   and is refused as [`PeftError::NoSuchModule`], as PEFT would not load it either.
//! - **A config names its targets**: one with neither `target_modules` nor `target_parameters`
//!   is refused, where PEFT falls back on a per-model-type default table this crate does not
//!   carry.
//!
//! PEFT's own matching tables (`tests/test_tuners_utils.py`, `tests/test_config.py`) run as data
//! in `tests/tests/peft_tables.rs` (cases made with peft 0.21.2 by
//! `tests/fixtures/peft_tables/make.py`); every case that disagrees is listed there with the
//! departure above that explains it.

pub mod names;

mod adapter;
pub mod checkpoint;
mod config;
mod config_json;
pub(crate) mod convert;
mod error;
pub mod experts;
pub(crate) mod fused_view;
pub mod inspect;
pub mod layer;
pub mod merge;
mod merge_files;
pub(crate) mod per_expert;
pub mod plan;
pub mod write;

pub use adapter::{Adapter, RawTensor};
pub use config::{
    ConfigProblem, LayerIndices, LoraConfig, Refusal, TargetModules, alpha_for, scale,
};
pub use error::PeftError;
#[cfg(any(feature = "candle", feature = "burn"))]
pub(crate) use error::bank_dropout_error;
pub use layer::{
    AdaptedLayer, Attachment, LayerInfo, LayerShape, LayerStatus, LoadMode, LoadPlan,
    ParameterCounts, PlannedFactors, PlannedParameter,
};
pub use names::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, DEFAULT_ADAPTER, PEFT_PREFIX};
pub use per_expert::PerExpertNames;
pub use write::{SavedFactors, SavedParameter, saved_module_layers, write_adapter};
