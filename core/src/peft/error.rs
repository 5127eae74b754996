//! The one error of PEFT adapter files, shared by candle and burn: every message names the file,
//! the tensor or the config key, and what was expected.

use std::path::PathBuf;

use crate::target::{PeftConfigError, ResolveError};

/// Why an adapter could not be read, loaded, applied or saved. The model is unchanged whenever
/// one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeftError {
    /// A file could not be read or written.
    #[error("cannot access `{}`: {source}", file.display())]
    Io {
        /// The file or directory.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A merged checkpoint cannot be written where asked: the checkpoint's own directory, a
    /// directory that is not empty, a file, or a write that failed (its partial file removed).
    #[error("cannot write the merged checkpoint to `{}`: {problem}", dir.display())]
    Output {
        /// The output directory.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// `adapter_config.json` is not JSON, or a field has a bad type or value.
    #[error("`{}`: {source}", file.display())]
    Config {
        /// The config file (`adapter_config.json` for a config given in memory).
        file: PathBuf,
        /// What is wrong, naming the field.
        source: PeftConfigError,
    },
    /// The config sets an option this crate does not implement.
    #[error("`{}`: `{option}` = {value} is refused: {reason}", file.display())]
    Refused {
        /// The config file.
        file: PathBuf,
        /// The option's key.
        option: &'static str,
        /// Its value, as JSON.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// The config's selection does not fit the model (an entry that matches nothing, every
    /// layer filtered out, …).
    #[error("`{}`: the selection does not fit the model: {source}", file.display())]
    Selection {
        /// The config file.
        file: PathBuf,
        /// The resolution's errors.
        source: ResolveError,
    },
    /// The weights file is not a readable safetensors file.
    #[error("`{}` is not a readable safetensors file: {message}", file.display())]
    Safetensors {
        /// The weights file.
        file: PathBuf,
        /// The reader's message.
        message: String,
    },
    /// A tensor name that is neither a LoRA factor nor a parameter of a module saved whole.
    #[error(
        "tensor `{key}` is not a LoRA factor (`<path>.lora_A.weight`, `<path>.lora_B.weight`, \
         `<path>.lora_embedding_A`, `<path>.lora_embedding_B`) nor a parameter of a module in \
         `modules_to_save`"
    )]
    UnknownTensor {
        /// The tensor's name.
        key: String,
    },
    /// A tensor whose dtype is not a float.
    #[error("tensor `{key}` has dtype {dtype}; expected F16, BF16, F32 or F64")]
    Dtype {
        /// The tensor's name.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// A tensor names a module the model does not have.
    #[error(
        "tensor `{key}` names `{path}`, which is not a module of the model{}",
        hint(suggestions)
    )]
    NoSuchModule {
        /// The tensor's name.
        key: String,
        /// The module path it names.
        path: String,
        /// Layers of the model with the same last name.
        suggestions: Vec<String>,
    },
    /// A tensor (or a path given to attach to) names a layer that is not a linear or an
    /// embedding, or a parameter the layer does not have.
    #[error("`{path}` is a `{type_name}`, which {what} (from `{key}`)")]
    NotAdaptable {
        /// The tensor's name, or the path given.
        key: String,
        /// The layer's path.
        path: String,
        /// The layer's type.
        type_name: &'static str,
        /// What the layer cannot do.
        what: &'static str,
    },
    /// Two tensors for one place.
    #[error("`{path}` has conflicting tensors `{first}` and `{second}`")]
    Conflict {
        /// The module path.
        path: String,
        /// The first tensor's name.
        first: String,
        /// The second tensor's name.
        second: String,
    },
    /// One factor of a pair without the other.
    #[error("`{path}` has `{present}` but no `{missing}`: LoRA factors come in pairs")]
    Unpaired {
        /// The module path.
        path: String,
        /// The tensor present.
        present: String,
        /// The tensor missing.
        missing: String,
    },
    /// A tensor of the wrong shape.
    #[error("tensor `{key}` has shape {found:?}; `{path}` expects {expected:?} ({axes})")]
    Shape {
        /// The tensor's name.
        key: String,
        /// The module path.
        path: String,
        /// The shape expected.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
        /// What the axes are.
        axes: &'static str,
    },
    /// A pair whose rank is not the one the config gives its layer.
    #[error(
        "tensor `{key}` has rank {found}; the config gives `{path}` rank {expected} \
         (`r` or `rank_pattern`)"
    )]
    Rank {
        /// The tensor's name.
        key: String,
        /// The module path.
        path: String,
        /// The config's rank.
        expected: u32,
        /// The tensor's rank.
        found: usize,
    },
    /// A tensor for a layer the config's selection leaves out.
    #[error("tensor `{key}` adapts `{path}`, which the config leaves out through `{option}`")]
    NotSelected {
        /// The tensor's name.
        key: String,
        /// The layer's path.
        path: String,
        /// The option that leaves it out: `target_modules`, `exclude_modules`,
        /// `layers_to_transform`, `modules_to_save` (no LoRA inside a module saved whole).
        option: &'static str,
    },
    /// A path given to attach an adapter to is not a leaf layer of the model.
    #[error("`{path}` is not a leaf layer of the model")]
    NotALayer {
        /// The path.
        path: String,
    },
    /// A rank of 0 or an alpha that is not finite, given for one layer.
    #[error(
        "`{path}`: invalid LoRA settings r = {rank}, alpha = {alpha}; r must be at least 1 and alpha finite"
    )]
    Settings {
        /// The layer's path.
        path: String,
        /// The rank.
        rank: u32,
        /// The alpha.
        alpha: f64,
    },
    /// The parameter store already holds a variable of an adapter's name.
    #[error(
        "the parameter store already has a variable `{name}`: the variables take PEFT's key names, which are the same for every adapter, so each adapter needs a store of its own"
    )]
    VariableExists {
        /// The variable's name.
        name: String,
    },
    /// A layer the config selects that the file has no factors for.
    #[error("`{path}` is selected by the config but the file has no LoRA factors for it")]
    Missing {
        /// The layer's path.
        path: String,
    },
    /// A module `modules_to_save` names that the file has no weights for.
    #[error("`{path}` is in `modules_to_save` but the file has no `{path}.{param}`")]
    MissingSaved {
        /// The module's path.
        path: String,
        /// The parameter missing.
        param: String,
    },
    /// Attaching needs a LoRA slot, and the layer is a plain one.
    #[error(
        "`{path}` is a plain `{type_name}`; declare it as `{slot}` to attach an adapter, or load with `LoadMode::Merge`"
    )]
    NotASlot {
        /// The layer's path.
        path: String,
        /// Its type.
        type_name: &'static str,
        /// The slot type to declare.
        slot: &'static str,
    },
    /// The layer already holds an adapter of that name.
    #[error("`{path}` already holds an adapter named `{adapter}`")]
    DuplicateAdapter {
        /// The layer's path.
        path: String,
        /// The adapter's name.
        adapter: String,
    },
    /// The layer is shared (behind an `Arc` or `Rc`) and cannot change in place.
    #[error("`{path}` is shared (behind an `Arc` or `Rc`) and cannot take an adapter in place")]
    ReadOnly {
        /// The layer's path.
        path: String,
    },
    /// A slot has an adapter merged into its weight, and the file would replace that weight:
    /// unmerging afterwards would subtract a delta the new weight never had.
    #[error(
        "`{path}` has adapter `{adapter}` merged into its weight; unmerge it before loading a weight into it"
    )]
    Merged {
        /// The layer's path.
        path: String,
        /// The merged adapter.
        adapter: String,
    },
    /// No layer holds an adapter to save.
    #[error("no layer of the model holds an adapter named `{adapter}` to save")]
    NothingToSave {
        /// The adapter's name (`"default"` unless chosen).
        adapter: String,
    },
    /// An adapter to save whose rsLoRA setting disagrees with the config's: the file would load
    /// back with another scale.
    #[error(
        "`{path}`'s adapter `{adapter}` has use_rslora = {rslora} but the config says {config_rslora}"
    )]
    ConfigMismatch {
        /// The layer's path.
        path: String,
        /// The adapter's name.
        adapter: String,
        /// The adapter's setting.
        rslora: bool,
        /// The config's setting.
        config_rslora: bool,
    },
    /// A checkpoint to merge an adapter into could not be read.
    #[error("cannot read the checkpoint `{}`: {message}", path.display())]
    Checkpoint {
        /// The checkpoint's file, index or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Weights an adapter changed that the model never read (a head it ties to the embedding, a
    /// module it names otherwise): the adapter would be dropped in part without a word.
    #[error("the model never read {} weight(s) the adapter changed: {}", tensors.len(), quoted(tensors))]
    NotRead {
        /// The weights' names.
        tensors: Vec<String>,
    },
    /// A tensor operation of the framework failed.
    #[error("tensor operation failed at `{path}`: {message}")]
    Tensor {
        /// The layer's path.
        path: String,
        /// The framework's message.
        message: String,
    },
}

fn quoted(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    quoted.join(", ")
}

fn hint(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = suggestions.iter().map(|s| format!("`{s}`")).collect();
        format!("; layers with that name: {}", quoted.join(", "))
    }
}

/// The error for LoRA dropout on an expert bank at `path`: PEFT's `ParamWrapper` (which adapts a
/// parameter whole, as every bank is adapted) raises `lora.ParamWrapper does not work with
/// lora_dropout != 0` (`peft/tuners/lora/layer.py`), so such an adapter could be neither
/// trained with its dropout nor loaded by PEFT.
#[cfg(any(feature = "candle", feature = "burn"))]
pub(crate) fn bank_dropout_error(path: &str, type_name: &'static str) -> PeftError {
    PeftError::NotAdaptable {
        key: "lora_dropout".to_owned(),
        path: path.to_owned(),
        type_name,
        what: "takes no LoRA dropout (PEFT's `ParamWrapper` refuses `lora_dropout` != 0 for a parameter adapted whole); set `lora_dropout` to 0, or adapt the banks with a config of their own",
    }
}
