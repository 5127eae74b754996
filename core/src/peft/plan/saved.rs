//! The whole-parameter side of a plan: the tensors of modules saved whole (`modules_to_save`,
//! and the base-layer copies PEFT saves of adapted embeddings), each checked against its layer.

use std::collections::{HashMap, HashSet};

use super::group::Parameters;
use super::{Survey, not_adaptable, same_name};
use crate::peft::adapter::Adapter;
use crate::peft::error::PeftError;
use crate::peft::layer::{Attachment, LayerInfo, LayerShape, PlannedParameter};

impl Adapter {
    /// Checks every whole parameter against its layer, and every module saved whole for
    /// completeness; returns them in walk order.
    pub(super) fn plan_parameters<'a>(
        &'a self,
        survey: &Survey,
        layers: &HashMap<String, LayerInfo>,
        parameters: Parameters<'a>,
    ) -> Result<Vec<PlannedParameter<'a>>, PeftError> {
        let saved = self.config.modules_to_save.as_deref().unwrap_or_default();
        if let Some(unused) = survey
            .saved_used
            .iter()
            .position(|used| !used)
            .and_then(|at| saved.get(at))
        {
            return Err(PeftError::NoSuchModule {
                key: "modules_to_save".to_owned(),
                path: unused.clone(),
                suggestions: same_name(unused, layers),
            });
        }
        let saved_layers: HashSet<&str> = survey.saved_layers.iter().map(String::as_str).collect();
        let mut planned = Vec::with_capacity(parameters.len());
        for ((path, param), (key, tensor)) in &parameters {
            let base_copy = key.contains(".base_layer.") && layers.contains_key(*path);
            if !saved_layers.contains(path) && !base_copy {
                if survey.nodes.contains_key(*path) || saved.is_empty() {
                    return Err(PeftError::UnknownTensor {
                        key: (*key).to_owned(),
                    });
                }
                return Err(PeftError::NoSuchModule {
                    key: (*key).to_owned(),
                    path: (*path).to_owned(),
                    suggestions: same_name(path, layers),
                });
            }
            let Some(info) = layers.get(*path) else {
                return Err(PeftError::UnknownTensor {
                    key: (*key).to_owned(),
                });
            };
            let expected = match (info.shape, *param) {
                (
                    LayerShape::Linear {
                        in_features,
                        out_features,
                        ..
                    },
                    "weight",
                ) => (
                    vec![out_features, in_features],
                    "[out_features, in_features]",
                ),
                (
                    LayerShape::Linear {
                        out_features,
                        bias: true,
                        ..
                    },
                    "bias",
                ) => (vec![out_features], "[out_features]"),
                (
                    LayerShape::Embedding {
                        num_embeddings,
                        embedding_dim,
                    },
                    "weight",
                ) => (
                    vec![num_embeddings, embedding_dim],
                    "[num_embeddings, embedding_dim]",
                ),
                (LayerShape::Other, _) => {
                    return Err(not_adaptable(
                        key,
                        path,
                        info,
                        "is neither a linear nor an embedding, so it cannot be loaded whole",
                    ));
                }
                _ => {
                    return Err(not_adaptable(key, path, info, "has no such parameter"));
                }
            };
            if tensor.shape != expected.0 {
                return Err(PeftError::Shape {
                    key: (*key).to_owned(),
                    path: (*path).to_owned(),
                    expected: expected.0,
                    found: tensor.shape.clone(),
                    axes: expected.1,
                });
            }
            if info.attachment == Attachment::ReadOnly {
                return Err(PeftError::ReadOnly {
                    path: (*path).to_owned(),
                });
            }
            planned.push(PlannedParameter {
                path: (*path).to_owned(),
                param: (*param).to_owned(),
                tensor,
            });
        }
        for path in &survey.saved_layers {
            let needed: &[&str] = match layers.get(path).map(|info| info.shape) {
                Some(LayerShape::Linear { bias: true, .. }) => &["weight", "bias"],
                Some(LayerShape::Linear { .. } | LayerShape::Embedding { .. }) => &["weight"],
                _ => &[],
            };
            if let Some(param) = needed
                .iter()
                .find(|param| !parameters.contains_key(&(path.as_str(), **param)))
            {
                return Err(PeftError::MissingSaved {
                    path: path.clone(),
                    param: (*param).to_owned(),
                });
            }
        }
        planned.sort_by_key(|parameter| survey.position(&parameter.path));
        Ok(planned)
    }
}
