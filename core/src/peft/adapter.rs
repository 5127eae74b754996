//! An adapter directory read into memory: its validated config, the selection that config
//! implies, and its tensors by name with their dtype and shape checked to be floats.
//!
//! Nothing here knows a framework: tensors stay as little-endian bytes ([`RawTensor`]) until
//! candle or burn converts the ones a [`LoadPlan`](crate::peft::LoadPlan) keeps.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, View};

use crate::peft::config::{ConfigProblem, LoraConfig};
use crate::peft::error::PeftError;
use crate::peft::names::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use crate::target::TargetSpec;

/// A tensor as stored: dtype, shape and little-endian bytes (safetensors' layout).
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    /// The element type: one of `F16`, `BF16`, `F32`, `F64` once read.
    pub dtype: Dtype,
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements, little-endian, row-major.
    pub data: Vec<u8>,
}

impl RawTensor {
    /// An `F32` tensor of this shape holding `values` (row-major).
    #[must_use]
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> RawTensor {
        RawTensor {
            dtype: Dtype::F32,
            shape,
            data: values
                .iter()
                .flat_map(|value| value.to_le_bytes())
                .collect(),
        }
    }

    /// An `F64` tensor of this shape holding `values` (row-major).
    #[must_use]
    pub fn from_f64(shape: Vec<usize>, values: &[f64]) -> RawTensor {
        RawTensor {
            dtype: Dtype::F64,
            shape,
            data: values
                .iter()
                .flat_map(|value| value.to_le_bytes())
                .collect(),
        }
    }
}

impl View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }

    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// A PEFT adapter directory read into memory: `adapter_config.json` validated and
/// `adapter_model.safetensors` parsed.
#[derive(Clone, Debug)]
pub struct Adapter {
    pub(crate) config_file: PathBuf,
    pub(crate) config: LoraConfig,
    pub(crate) spec: TargetSpec,
    pub(crate) tensors: BTreeMap<String, RawTensor>,
}

/// The `PeftError` of a config problem in `file`.
pub(crate) fn config_error(file: &Path, problem: ConfigProblem) -> PeftError {
    match problem {
        ConfigProblem::Invalid(source) => PeftError::Config {
            file: file.to_owned(),
            source,
        },
        ConfigProblem::Refused(refusal) => PeftError::Refused {
            file: file.to_owned(),
            option: refusal.option,
            value: refusal.value,
            reason: refusal.reason,
        },
    }
}

impl LoraConfig {
    /// The config validated ([`LoraConfig::validate`]) and its selection, with errors that name
    /// `file` as the config's file.
    pub(crate) fn checked_spec(&self, file: &Path) -> Result<TargetSpec, PeftError> {
        self.validate()
            .map_err(|problem| config_error(file, problem))?;
        self.target_spec().map_err(|source| PeftError::Config {
            file: file.to_owned(),
            source,
        })
    }
}

impl Adapter {
    /// Reads `adapter_config.json` and `adapter_model.safetensors` from `dir`.
    ///
    /// # Errors
    ///
    /// [`PeftError::Io`], [`PeftError::Config`] (not JSON, a field of the wrong type or value),
    /// [`PeftError::Refused`] (an option this crate does not implement),
    /// [`PeftError::Safetensors`], [`PeftError::Dtype`] (a tensor that is not a float).
    pub fn read(dir: impl AsRef<Path>) -> Result<Adapter, PeftError> {
        let dir = dir.as_ref();
        let config_file = dir.join(ADAPTER_CONFIG_FILE);
        let text = fs::read_to_string(&config_file).map_err(|source| PeftError::Io {
            file: config_file.clone(),
            source,
        })?;
        let config = LoraConfig::from_json(&text).map_err(|source| PeftError::Config {
            file: config_file.clone(),
            source,
        })?;
        let weights_file = dir.join(ADAPTER_WEIGHTS_FILE);
        let bytes = fs::read(&weights_file).map_err(|source| PeftError::Io {
            file: weights_file.clone(),
            source,
        })?;
        let tensors = read_tensors(&bytes, &weights_file)?;
        Adapter::new(config, tensors, config_file)
    }

    /// An adapter from a config and tensors already in memory; `config_file` is the name errors
    /// give the config.
    ///
    /// # Errors
    ///
    /// [`PeftError::Config`], [`PeftError::Refused`], [`PeftError::Dtype`].
    pub fn new(
        config: LoraConfig,
        tensors: BTreeMap<String, RawTensor>,
        config_file: PathBuf,
    ) -> Result<Adapter, PeftError> {
        let spec = config.checked_spec(&config_file)?;
        if let Some((key, tensor)) = tensors.iter().find(|(_, t)| !is_float(t.dtype)) {
            return Err(PeftError::Dtype {
                key: key.clone(),
                dtype: format!("{:?}", tensor.dtype),
            });
        }
        Ok(Adapter {
            config_file,
            config,
            spec,
            tensors,
        })
    }

    /// The adapter's config.
    #[must_use]
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// The selection the config implies.
    #[must_use]
    pub fn spec(&self) -> &TargetSpec {
        &self.spec
    }

    /// The tensors by name, sorted.
    #[must_use]
    pub fn tensors(&self) -> &BTreeMap<String, RawTensor> {
        &self.tensors
    }
}

fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

/// Parses a safetensors buffer into owned tensors.
fn read_tensors(bytes: &[u8], file: &Path) -> Result<BTreeMap<String, RawTensor>, PeftError> {
    let parsed =
        safetensors::SafeTensors::deserialize(bytes).map_err(|error| PeftError::Safetensors {
            file: file.to_owned(),
            message: error.to_string(),
        })?;
    Ok(parsed
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let tensor = RawTensor {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            };
            (name, tensor)
        })
        .collect())
}

/// Writes `tensors` as safetensors with PEFT's `{"format": "pt"}` metadata.
pub(crate) fn serialize_tensors(
    tensors: &[(String, RawTensor)],
    file: &Path,
) -> Result<Vec<u8>, PeftError> {
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    safetensors::tensor::serialize(
        tensors.iter().map(|(name, tensor)| (name.as_str(), tensor)),
        Some(metadata),
    )
    .map_err(|error| PeftError::Safetensors {
        file: file.to_owned(),
        message: error.to_string(),
    })
}
