//! An adapter directory read into memory: its validated config, the selection that config
//! implies, and its tensors by name with their dtype and shape checked to be floats.
//!
//! Nothing here knows a framework: tensors stay as little-endian bytes ([`RawTensor`]) until
//! candle or burn converts the ones a [`LoadPlan`](crate::peft::LoadPlan) keeps.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::tensor::{Dtype, View};

use crate::peft::config::{ConfigProblem, LoraConfig};
use crate::peft::error::PeftError;
use crate::peft::names::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use crate::target::TargetSpec;

/// A tensor as stored: dtype, shape and little-endian bytes (safetensors' layout). A tensor read
/// from a file shares the file's buffer rather than copying its bytes.
#[derive(Clone, Debug)]
pub struct RawTensor {
    /// The element type: one of `F16`, `BF16`, `F32`, `F64` once read.
    pub dtype: Dtype,
    /// The shape.
    pub shape: Vec<usize>,
    buffer: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl PartialEq for RawTensor {
    fn eq(&self, other: &Self) -> bool {
        self.dtype == other.dtype && self.shape == other.shape && self.data() == other.data()
    }
}

impl RawTensor {
    /// A tensor of this dtype and shape holding `data` (little-endian, row-major).
    #[must_use]
    pub fn new(dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> RawTensor {
        let range = 0..data.len();
        RawTensor {
            dtype,
            shape,
            buffer: Arc::new(data),
            range,
        }
    }

    /// An `F32` tensor of this shape holding `values` (row-major).
    #[must_use]
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> RawTensor {
        let data = values
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect();
        RawTensor::new(Dtype::F32, shape, data)
    }

    /// An `F64` tensor of this shape holding `values` (row-major).
    #[must_use]
    pub fn from_f64(shape: Vec<usize>, values: &[f64]) -> RawTensor {
        let data = values
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect();
        RawTensor::new(Dtype::F64, shape, data)
    }

    /// The elements as `f32`, row-major (`F64` values rounded, `F16` and `BF16` widened), for
    /// the tensor of the layer at `path` (named in errors).
    ///
    /// # Errors
    ///
    /// [`PeftError::Dtype`] when the dtype is not a float; [`PeftError::Tensor`] when the bytes
    /// do not fill the shape.
    pub fn to_f32_vec(&self, path: &str) -> Result<Vec<f32>, PeftError> {
        let data = self.data();
        #[expect(
            clippy::cast_possible_truncation,
            reason = "f64 values are read at f32"
        )]
        let values: Vec<f32> = match self.dtype {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(PeftError::Dtype {
                    key: path.to_owned(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let elements = self
            .shape
            .iter()
            .try_fold(1_usize, |count, &axis| count.checked_mul(axis));
        if elements != Some(values.len()) || values.len() * self.dtype.bitsize() / 8 != data.len() {
            return Err(PeftError::Tensor {
                path: path.to_owned(),
                message: format!(
                    "a tensor of shape {:?} holds {} bytes of {:?}",
                    self.shape,
                    data.len(),
                    self.dtype
                ),
            });
        }
        Ok(values)
    }

    /// The elements as `f64`, row-major, for the merge's arithmetic; errors as
    /// [`to_f32_vec`](Self::to_f32_vec).
    pub(crate) fn to_f64_values(&self, path: &str) -> Result<Vec<f64>, PeftError> {
        if self.dtype == Dtype::F64 {
            let data = self.data();
            let values: Vec<f64> = data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            let elements = self
                .shape
                .iter()
                .try_fold(1_usize, |count, &axis| count.checked_mul(axis));
            if elements != Some(values.len()) || values.len() * 8 != data.len() {
                return Err(PeftError::Tensor {
                    path: path.to_owned(),
                    message: format!(
                        "a tensor of shape {:?} holds {} bytes of F64",
                        self.shape,
                        data.len()
                    ),
                });
            }
            return Ok(values);
        }
        Ok(self.to_f32_vec(path)?.into_iter().map(f64::from).collect())
    }

    /// A tensor known by its header entry alone: dtype and shape, no bytes. An [`Adapter`] of
    /// such tensors ([`Adapter::read_header`]) can be planned against a model, not loaded.
    #[must_use]
    pub fn header_only(dtype: Dtype, shape: Vec<usize>) -> RawTensor {
        RawTensor {
            dtype,
            shape,
            buffer: Arc::new(Vec::new()),
            range: 0..0,
        }
    }

    /// The elements' bytes, little-endian, row-major.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        self.buffer.get(self.range.clone()).unwrap_or_default()
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
        Cow::Borrowed(RawTensor::data(self))
    }

    fn data_len(&self) -> usize {
        self.range.len()
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
        let (config_file, config) = read_config(dir)?;
        let weights_file = dir.join(ADAPTER_WEIGHTS_FILE);
        let bytes = fs::read(&weights_file).map_err(|source| PeftError::Io {
            file: weights_file.clone(),
            source,
        })?;
        let tensors = read_tensors(bytes, &weights_file)?;
        Adapter::new(config, tensors, config_file)
    }

    /// Reads `adapter_config.json` and only the header of `adapter_model.safetensors` from
    /// `dir`: every tensor's name, dtype and shape, none of its bytes
    /// ([`RawTensor::header_only`]). Enough to [`plan`](Adapter::plan) the adapter against a
    /// model (what it adapts, whether it fits), at any adapter size; loading needs
    /// [`Adapter::read`]. The header is checked as [`read_header`](crate::checkpoint::read_header)
    /// checks a checkpoint's.
    ///
    /// # Errors
    ///
    /// As [`Adapter::read`].
    pub fn read_header(dir: impl AsRef<Path>) -> Result<Adapter, PeftError> {
        let dir = dir.as_ref();
        let (config_file, config) = read_config(dir)?;
        let (weights_file, header) = read_weights_header(dir)?;
        let mut tensors = BTreeMap::new();
        for tensor in header.tensors {
            let shape: Option<Vec<usize>> = tensor
                .shape
                .iter()
                .map(|&axis| usize::try_from(axis).ok())
                .collect();
            let Some(shape) = shape else {
                return Err(PeftError::Safetensors {
                    file: weights_file,
                    message: format!(
                        "tensor `{}` has an axis too large for this machine",
                        tensor.name
                    ),
                });
            };
            tensors.insert(tensor.name, RawTensor::header_only(tensor.dtype, shape));
        }
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

    /// Writes the adapter to `dir` in PEFT's layout (`adapter_config.json`,
    /// `adapter_model.safetensors` with `{"format": "pt"}` metadata), through temporary files.
    ///
    /// # Errors
    ///
    /// [`PeftError::Io`] and [`PeftError::Safetensors`].
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<(), PeftError> {
        let tensors: Vec<(String, RawTensor)> = self
            .tensors
            .iter()
            .map(|(name, tensor)| (name.clone(), tensor.clone()))
            .collect();
        crate::peft::write::write_files(dir.as_ref(), &self.config, &tensors)
    }

    /// The tensors by name, sorted.
    #[must_use]
    pub fn tensors(&self) -> &BTreeMap<String, RawTensor> {
        &self.tensors
    }
}

/// `adapter_config.json` of the adapter directory `dir`, parsed (not yet validated), and its path.
pub(crate) fn read_config(dir: &Path) -> Result<(PathBuf, LoraConfig), PeftError> {
    let config_file = dir.join(ADAPTER_CONFIG_FILE);
    let bytes = fs::read(&config_file).map_err(|source| PeftError::Io {
        file: config_file.clone(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line_start = valid
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        PeftError::Config {
            file: config_file.clone(),
            source: crate::target::PeftConfigError::Json {
                line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
                column: valid.len() - line_start + 1,
                message: format!("byte {} is not UTF-8, and JSON text is UTF-8", valid.len()),
            },
        }
    })?;
    let config = LoraConfig::from_json(&text).map_err(|source| PeftError::Config {
        file: config_file.clone(),
        source,
    })?;
    Ok((config_file, config))
}

/// The header of `adapter_model.safetensors` in the adapter directory `dir`, checked as a
/// checkpoint's header is, and the file's path.
pub(crate) fn read_weights_header(
    dir: &Path,
) -> Result<(PathBuf, crate::checkpoint::Header), PeftError> {
    let weights_file = dir.join(ADAPTER_WEIGHTS_FILE);
    let header =
        crate::checkpoint::read_header(&weights_file).map_err(|error| PeftError::Safetensors {
            file: weights_file.clone(),
            message: error.to_string(),
        })?;
    Ok((weights_file, header))
}

fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

/// Parses a safetensors buffer into tensors that share it.
fn read_tensors(bytes: Vec<u8>, file: &Path) -> Result<BTreeMap<String, RawTensor>, PeftError> {
    // The header reader's words where it finds the fault (the tensor, the offsets, the byte), as
    // inspection reports it; the safetensors crate's otherwise.
    let invalid = |error: safetensors::SafeTensorError| PeftError::Safetensors {
        file: file.to_owned(),
        message: crate::checkpoint::read_header(file)
            .err()
            .map_or_else(|| error.to_string(), |precise| precise.to_string()),
    };
    // `deserialize` checks the header and the data's bounds; each view's place in the buffer is
    // its slice's distance from the buffer's start.
    let base = bytes.as_ptr() as usize;
    let found: Vec<(String, Dtype, Vec<usize>, Range<usize>)> =
        safetensors::SafeTensors::deserialize(&bytes)
            .map_err(invalid)?
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let begin = (view.data().as_ptr() as usize).saturating_sub(base);
                let range = begin..begin.saturating_add(view.data().len());
                (name, view.dtype(), view.shape().to_vec(), range)
            })
            .collect();
    let buffer = Arc::new(bytes);
    Ok(found
        .into_iter()
        .map(|(name, dtype, shape, range)| {
            let tensor = RawTensor {
                dtype,
                shape,
                buffer: Arc::clone(&buffer),
                range,
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
