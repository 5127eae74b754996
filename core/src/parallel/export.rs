//! Plans in the formats engines read: transformers' `base_model_tp_plan` / `base_model_ep_plan`
//! and DeepSpeed AutoTP's `partition_config`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::kind::{Expertise, Kind, Parallel};
use crate::parallel::ParallelPlan;
use crate::parallel::error::PlanError;
use crate::parallel::placement::part_sizes;
use crate::parallel::plan::ExpertShare;
use crate::path::normalize;

/// transformers' plans, keyed as transformers keys them: module paths with `*` for every index.
///
/// transformers splits them in two: the config class's `base_model_tp_plan` /
/// `base_model_ep_plan`, relative to the base model (`layers.*.self_attn.q_proj`), and the
/// task model's `_tp_plan` / `_ep_plan` for what lies outside it (`lm_head`). Layers without a
/// style are left out, which transformers reads as "whole on every rank".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransformersPlans {
    /// `base_model_tp_plan`.
    pub base_model_tp_plan: BTreeMap<String, String>,
    /// `base_model_ep_plan`.
    pub base_model_ep_plan: BTreeMap<String, String>,
    /// The task model's `_tp_plan`: entries outside the base model.
    pub tp_plan: BTreeMap<String, String>,
    /// The task model's `_ep_plan`: entries outside the base model.
    pub ep_plan: BTreeMap<String, String>,
}

/// transformers' name of a style (`transformers/distributed/tensor_parallel.py`,
/// `ALL_PARALLEL_STYLES`).
fn transformers_style(style: Parallel) -> Option<&'static str> {
    Some(match style {
        Parallel::Column => "colwise",
        Parallel::Row => "rowwise",
        Parallel::ColumnGather => "colwise_gather_output",
        Parallel::RowSplit => "rowwise_split_input",
        Parallel::PackedColumn => "packed_colwise",
        Parallel::PackedRow => "packed_rowwise",
        Parallel::Vocab => "embedding_rowwise",
        Parallel::Replicated => return None,
    })
}

/// `path` as a plan key: indices as `*`, and whether it lies under `base` (then relative to it).
fn key(path: &str, base: &str) -> (bool, String) {
    let starred = normalize(path).replace("<>", "*");
    if base.is_empty() {
        return (true, starred);
    }
    match starred
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('.'))
    {
        Some(rest) => (true, rest.to_owned()),
        None => (false, starred),
    }
}

/// A Python regex matching the parameter names of the layers at pattern `path`, anchored at the
/// root: `<>` any index, `*` (a map key in a schema) any one segment.
fn pattern(path: &str, suffix: &str) -> String {
    let escaped = regex::escape(&normalize(path))
        .replace("<>", r"\d+")
        .replace(r"\*", r"[^.]+");
    format!("^{escaped}{suffix}$")
}

/// The style every layer under one key has; two different ones (a replicated layer counts) are
/// an [`PlanError::ExportConflict`].
fn agree(
    styles: &mut BTreeMap<String, Parallel>,
    key: &str,
    style: Parallel,
) -> Result<(), PlanError> {
    match styles.get(key) {
        Some(known) if *known != style => Err(PlanError::ExportConflict {
            key: key.to_owned(),
            first: known.name().to_owned(),
            second: style.name().to_owned(),
        }),
        Some(_) => Ok(()),
        None => {
            styles.insert(key.to_owned(), style);
            Ok(())
        }
    }
}

impl ParallelPlan {
    /// transformers' tensor- and expert-parallel plans, with `base` the base model's path in this
    /// tree (`"model"` for a `…ForCausalLM`; `""` when the tree is the base model).
    ///
    /// Fused expert banks get their style in the tp plan and `grouped_gemm` in the ep plan; their
    /// owner gets `moe_tp_experts` (which sums the experts' partial outputs over the tensor
    /// group; only when its banks are split) and `ep_dispatch_experts`
    /// (`transformers/distributed/expert_parallel.py`).
    ///
    /// # Errors
    ///
    /// [`PlanError::Unsupported`] for routed experts kept one module per expert (transformers 5
    /// fuses them into banks and plans only those) and for packed layers whose parts are not two
    /// equal halves (transformers' `packed_colwise` splits two); [`PlanError::ExportConflict`]
    /// when layers under one key have different styles (a replicated one included);
    /// [`PlanError::NoSuchBase`] when no layer lies under `base`.
    pub fn transformers(&self, base: &str) -> Result<TransformersPlans, PlanError> {
        if !base.is_empty() && !self.layers.iter().any(|layer| key(&layer.path, base).0) {
            return Err(PlanError::NoSuchBase {
                base: base.to_owned(),
            });
        }
        let mut plans = TransformersPlans::default();
        let mut styles = BTreeMap::new();
        let mut split_owners = std::collections::BTreeSet::new();
        for layer in &self.layers {
            let (inside, key) = key(&layer.path, base);
            agree(&mut styles, &key, layer.style)?;
            let (tp, ep) = if inside {
                (&mut plans.base_model_tp_plan, &mut plans.base_model_ep_plan)
            } else {
                (&mut plans.tp_plan, &mut plans.ep_plan)
            };
            let style = transformers_style(layer.style);
            if let Some(style) = style
                && style.starts_with("packed_")
                && !(layer.parts.len() == 2 && layer.parts[0] == layer.parts[1])
            {
                return Err(PlanError::Unsupported {
                    layer: layer.path.clone(),
                    format: "transformers",
                    what: format!(
                        "packed parts {:?}: its `{style}` splits two equal halves",
                        layer.parts
                    ),
                });
            }
            match &layer.experts {
                None => {
                    if let Some(style) = style {
                        tp.insert(key, style.to_owned());
                    }
                }
                Some(ExpertShare::Bank { .. }) => {
                    if let Some(style) = style {
                        tp.insert(key.clone(), style.to_owned());
                        if let Some((owner, _)) = layer.path.rsplit_once('.') {
                            split_owners.insert(owner.to_owned());
                        }
                    }
                    ep.insert(key, "grouped_gemm".to_owned());
                }
                Some(ExpertShare::One { .. }) => {
                    return Err(PlanError::Unsupported {
                        layer: layer.path.clone(),
                        format: "transformers",
                        what: "routed experts kept one module per expert: transformers 5 fuses them into `grouped_linear` banks (`experts.gate_up_proj`, `experts.down_proj`) and plans only those".to_owned(),
                    });
                }
            }
        }
        for owner in self.experts.iter().filter(|owner| owner.fused) {
            let (inside, key) = key(&owner.path, base);
            let (tp, ep) = if inside {
                (&mut plans.base_model_tp_plan, &mut plans.base_model_ep_plan)
            } else {
                (&mut plans.tp_plan, &mut plans.ep_plan)
            };
            if split_owners.contains(&normalize(&owner.path)) {
                tp.insert(key.clone(), "moe_tp_experts".to_owned());
            }
            ep.insert(key, "ep_dispatch_experts".to_owned());
        }
        Ok(plans)
    }

    /// DeepSpeed AutoTP's configuration: `{"tensor_parallel": {"autotp_size": tp,
    /// "partition_config": {"use_default_specs": false, "layer_specs": [...]}}}`, one layer spec per
    /// layer pattern; `patterns` are Python regexes over whole parameter names (DeepSpeed matches
    /// them with `re.match`), anchored at the root so that `layers.0.fc` never takes
    /// `vision.layers.0.fc` along.
    ///
    /// A fused expert bank is matched as the parameter it is (`…experts\.gate_up_proj$`), every
    /// other layer by its `weight`. Packed layers carry `shape` with the parts on the split axis
    /// (`[2, -1]` for two equal output parts, `[-1, [16, 8, 8]]` for unequal input parts, in
    /// sizes) and `partition_dim`; `column_gather` sets `gather_output`. Routed experts and
    /// vocabulary-parallel embeddings are `skip` (AutoTP splits `nn.Linear` layers only, as
    /// DeepSpeed's own converter does with `embedding_rowwise`); replicated layers are left out.
    ///
    /// # Errors
    ///
    /// [`PlanError::Unsupported`] for `row_split`, which AutoTP's row layers (whose input arrives
    /// split) cannot express, and for unequal packed parts of a plan made without sizes
    /// (DeepSpeed needs them as sizes); [`PlanError::ExportConflict`] when layers under one
    /// pattern have different styles.
    pub fn deepspeed_autotp(&self) -> Result<Value, PlanError> {
        let mut specs = Vec::new();
        let mut styles = BTreeMap::new();
        for layer in &self.layers {
            let key = normalize(&layer.path);
            let first = !styles.contains_key(&key);
            agree(&mut styles, &key, layer.style)?;
            if !first {
                continue;
            }
            let routed = layer.expertise == Expertise::Routed;
            if layer.style == Parallel::Replicated && !routed {
                continue;
            }
            // A bank is a parameter itself (`experts.gate_up_proj`); other layers own a `weight`.
            let suffix = if layer.kind == Kind::GroupedLinear {
                ""
            } else {
                r"\.weight"
            };
            let mut spec = json!({ "patterns": [pattern(&layer.path, suffix)] });
            let partition = match layer.style {
                _ if routed => "skip",
                Parallel::Vocab => "skip",
                Parallel::Column | Parallel::ColumnGather | Parallel::PackedColumn => "column",
                Parallel::Row | Parallel::PackedRow => "row",
                Parallel::RowSplit => {
                    return Err(PlanError::Unsupported {
                        layer: layer.path.clone(),
                        format: "DeepSpeed AutoTP",
                        what: "`row_split` (its row layers take an input that arrives split)"
                            .to_owned(),
                    });
                }
                Parallel::Replicated => continue,
            };
            spec["partition_type"] = json!(partition);
            if !routed && layer.style == Parallel::ColumnGather {
                spec["gather_output"] = json!(true);
            }
            if !routed && layer.style.is_packed() {
                let dim = usize::from(layer.style == Parallel::PackedRow);
                let equal = layer.parts.iter().all(|part| *part == layer.parts[0]);
                let parts = if equal {
                    json!(layer.parts.len())
                } else {
                    let sizes = layer
                        .shape
                        .as_ref()
                        .and_then(|shape| part_sizes(*shape.get(dim)?, &layer.parts))
                        .ok_or_else(|| PlanError::Unsupported {
                            layer: layer.path.clone(),
                            format: "DeepSpeed AutoTP",
                            what: format!(
                                "packed parts in the proportions {:?} without their sizes: build the plan with the weights' sizes",
                                layer.parts
                            ),
                        })?;
                    json!(sizes)
                };
                spec["shape"] = if dim == 0 {
                    json!([parts, -1])
                } else {
                    json!([-1, parts])
                };
                spec["partition_dim"] = json!(dim);
            }
            specs.push(spec);
        }
        Ok(json!({
            "tensor_parallel": {
                "autotp_size": self.config.tp,
                "partition_config": {
                    "use_default_specs": false,
                    "layer_specs": specs,
                },
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{key, pattern};

    #[test]
    fn keys_star_indices_and_strip_the_base_on_segment_boundaries() {
        assert_eq!(
            key("model.layers.3.mlp", "model"),
            (true, "layers.*.mlp".to_owned())
        );
        assert_eq!(key("lm_head", "model"), (false, "lm_head".to_owned()));
        assert_eq!(key("models.x", "model"), (false, "models.x".to_owned()));
        assert_eq!(key("layers.0.q", ""), (true, "layers.*.q".to_owned()));
    }

    #[test]
    fn patterns_are_anchored_and_tell_indices_from_keys() {
        assert_eq!(
            pattern("layers.<>.fc", r"\.weight"),
            r"^layers\.\d+\.fc\.weight$"
        );
        assert_eq!(pattern("blocks.*.up", ""), r"^blocks\.[^.]+\.up$");
    }
}
