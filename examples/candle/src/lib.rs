//! Model code shared by the candle examples and the candle tests: a Llama whose module paths
//! equal Hugging Face's `LlamaForCausalLM`, a Mixtral-shaped mixture of experts, and
//! candle-transformers' own models run with PEFT adapters merged at load (`transformers`).
//!
//! Both are generic over the projection type `P` of their attention and MLP layers:
//! `moduletree::candle::LoraLinear` takes adapters by name (attach, train, merge), a plain
//! `candle_nn::Linear` takes them only folded in (`LoadMode::Merge`).

pub mod cli;
pub mod deepseek;
pub mod llama;
pub mod mixtral;
pub mod moe;
pub mod transformers;

use candle_core::Module;
use candle_nn::Linear;
use moduletree::ModuleTree;

/// A projection layer of the example models: a `candle_nn::Linear` or a LoRA slot.
pub trait Projection: Module + ModuleTree + From<Linear> + core::fmt::Debug + 'static {}

impl<T: Module + ModuleTree + From<Linear> + core::fmt::Debug + 'static> Projection for T {}

/// Why a model could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("cannot read `{file}`: {source}")]
    Io {
        /// The file.
        file: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `config.json` is not a config this model understands.
    #[error("`{file}`: {message}")]
    Config {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor is missing or has the wrong shape, or an operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}
