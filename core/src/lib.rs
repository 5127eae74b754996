//! Make the module tree of a neural-network struct visible by path, at compile time and at run
//! time, so that LoRA adapters — and anything else that works per layer — can be targeted,
//! checked and applied.
//!
//! ```
//! use moduletree::ModuleTree;
//!
//! #[derive(ModuleTree)]
//! #[layer(kind = "linear")]
//! struct Linear {
//!     weight: Vec<f32>,
//! }
//!
//! #[derive(ModuleTree)]
//! struct Mlp {
//!     up_proj: Linear,
//!     down_proj: Linear,
//! }
//!
//! #[derive(ModuleTree)]
//! struct Model {
//!     #[layer(kind = "embedding")]
//!     embed_tokens: Vec<f32>,
//!     #[tree(layers)]
//!     layers: Vec<Mlp>,
//! }
//!
//! let mlp = || Mlp { up_proj: Linear { weight: vec![] }, down_proj: Linear { weight: vec![] } };
//! let model = Model { embed_tokens: vec![], layers: vec![mlp(), mlp()] };
//! assert_eq!(moduletree::find_all_linear_modules(&model), ["up_proj", "down_proj"]);
//! assert_eq!(moduletree::find_all_embedding_modules(&model), ["embed_tokens"]);
//! ```
//!
//! [`ModuleTree`](derive@ModuleTree)'s page documents every attribute, with an example each.
//!
//! # Where things are
//!
//! - **Walking**: [`walk`] and [`walk_mut`] visit every [`Node`] (path, kind, expert, head,
//!   parallel style), root first; [`Walk`] covers a model and a type's [`Schema`].
//! - **The seed's functions**: [`named_modules`], [`find_layers`], [`find_all_linear_modules`],
//!   [`find_all_embedding_modules`], [`find_all_router_modules`], [`set_linear_is_expert`].
//! - [`target`]: target specs (PEFT's `target_modules` meaning, shorthands, patterns, layer
//!   filters, rank and alpha patterns) and the compile-checked [`targets!`].
//! - [`schema`]: a type's static tree, known at compile time.
//! - [`registry`]: the model types a program links, by name.
//! - [`display`]: the folded tree, as PyTorch prints a model, and its JSON summary.
//! - [`checkpoint`]: a safetensors checkpoint's tree, from its headers alone.
//! - [`peft`]: PEFT's adapter files, config and rules, framework-free, for candle and burn.
//! - [`parallel`]: tensor- and expert-parallel plans and their exports to engines.
//! - [`dynamic`]: trait objects (`Box<dyn Block>`) in the tree.
//! - `candle` (feature `candle`) and `burn` (feature `burn`): their layers as leaves, LoRA slots
//!   and banks, PEFT adapters loaded, merged and saved.

/// The README, whose code blocks are compiled and run as doctests (with every feature, as the
/// README's test command runs them): an example that no longer compiles fails the tests.
#[cfg(all(doctest, feature = "candle", feature = "burn"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "burn")]
pub mod burn;
#[cfg(feature = "candle")]
pub mod candle;
pub mod checkpoint;
pub mod display;
pub mod dynamic;
mod find;
mod impls;
pub mod kind;
pub mod parallel;
pub mod path;
pub mod peft;
pub mod registry;
pub mod schema;
pub mod target;
mod tree;
mod walk;

pub use dynamic::DynModuleTree;
pub use find::{
    NamedModule, find_all_embedding_modules, find_all_linear_modules, find_all_router_modules,
    find_layers, named_modules, set_linear_is_expert,
};
pub use kind::{Expertise, Kind, Parallel};
pub use moduletree_macros::ModuleTree;
pub use path::{Path, Segment, normalize};
pub use schema::Schema;
pub use tree::{Field, ModuleTree, NodeInfo, Role};
pub use walk::{Node, NodeMut, Scope, Walk, Walker, WalkerMut, walk, walk_mut};

/// What generated code reaches through one absolute path. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use core::any::Any;
    pub use core::option::Option::{self, None, Some};
    pub use inventory;
    pub use moduletree_macros::__targets;

    pub use crate::kind::{Kind, Parallel};
    pub use crate::registry::Registration;
    pub use crate::schema::{
        FieldSchema, Schema, Shape, VariantSchema, check_dotted, check_flattened, check_layers,
        check_role, fields, info, layer_field, variants,
    };
    pub use crate::tree::{Field, ModuleTree, NodeInfo};
    pub use crate::walk::{Walker, WalkerMut};
}
