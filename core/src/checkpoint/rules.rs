//! Kind inference: the one rule table that turns a checkpoint's tensor names (and shapes, when a
//! shard's header was read) into layer kinds.
//!
//! A checkpoint knows no types. Each module of its tree that owns tensors and has no submodules
//! is a leaf candidate; the rows of [`Rule`] are tried in order and the first that applies gives
//! its kind, type name and flags. A candidate no row claims stays a plain `Module`. The tensors a
//! module owns are its *parameters*: `weight`, `bias`, and the companions a quantized layer keeps
//! beside its packed weight. A tensor under a parameter's name (bitsandbytes'
//! `q_proj.weight.absmax`, `q_proj.weight.quant_state.bitsandbytes__nf4`) is that parameter's
//! state, never a child module: PyTorch cannot register a parameter and a submodule under one
//! name.
//!
//! | row | applies to | gives |
//! |---|---|---|
//! | [`FusedExperts`](Rule::FusedExperts) | a tensor of a module named `experts` (transformers 5: `experts.gate_up_proj` [E, 2I, H], `experts.down_proj`; GPT-OSS `_bias`, `_blocks`/`_scales` companions; a bank's state, `down_proj.absmax`) | `grouped_linear` at the tensor's path, expert |
//! | [`ExpertBank`](Rule::ExpertBank) | a `weight` of 3+ dims beside a router or under `experts`, or whose first axis is `config.json`'s expert count; by name alone `input_linear` / `output_linear` beside a router (GraniteMoE, JetMoE) | `grouped_linear`, expert |
//! | [`Norm`](Rule::Norm) | a name containing `norm` (`input_layernorm`, `q_norm`, `LayerNorm`), or `ln`, `ln_f`, `ln_1`, `ln1`, `ln_pre`, `*_ln` (`pre_ln`); or a 1-D `weight` | `norm` |
//! | [`Conv`](Rule::Conv) | a `weight` of 3 to 5 dims (`Conv1d` … `Conv3d`); by name alone a name containing `conv`, or `patch_embed*` / `patch_embed*.proj` | `conv` |
//! | [`Head`](Rule::Head) | `lm_head`, `embed_out` (GPT-NeoX), `shared_head.head` (DeepSeek MTP); outside the repeated layers also `ff_out` (OLMo, Molmo) and `output` (Llama's original format, InternLM) | `linear`, head |
//! | [`Embedding`](Rule::Embedding) | a name containing `embed` (but `embed_out` and `patch_embed*`), `wte`, `wpe`, `tok_embeddings`, a top-level `shared` (T5); or a module owning an `embedding` tensor (Molmo's `wte.embedding`); 2-D when known | `embedding` |
//! | [`Router`](Rule::Router) | `gate`, `router`, or `router.layer` / `router.gate` beside experts (a sibling `experts`, or an expert bank) | `router` |
//! | [`LayernormLinear`](Rule::LayernormLinear) | a 2-D `weight` with a `layer_norm_weight` beside it (Megatron / Transformer Engine) | `layernorm_linear` |
//! | [`Linear`](Rule::Linear) | a 2-D `weight`, or a quantized layout (below); by name alone any other module owning a `weight` | `linear` |
//! | [`VocabHead`](Rule::VocabHead) | after the others: the last `linear` outside the repeated layers whose output size is the vocabulary (`config.json`'s `vocab_size`, else the embedding's rows) | `linear`, head |
//!
//! Quantized layouts are recognised by the tensors beside the weight, before any shape is
//! trusted (a packed weight's shape is not the layer's), and shown in the type name
//! ([`Quantization`]): bitsandbytes 4-bit (`weight` [n, 1] U8 with `weight.absmax`,
//! `weight.quant_map`, `weight.quant_state.*`), bitsandbytes 8-bit (`SCB`, `weight_format`),
//! GPTQ (`qweight`, `qzeros`, `scales`, `g_idx`), AWQ (the same without `g_idx`), FP8
//! (`weight_scale_inv`, or `weight` with `weight_scale`), MLX (`weight` with `scales`, and
//! `biases`), compressed-tensors (`weight_packed`), and MXFP4 expert banks (`*_blocks` with
//! `*_scales`).
//!
//! Known limits: a layer whose kind neither its name nor its shape tells (an `nn.Embedding`
//! named `query_768`) takes the row its shape allows (`linear`); without a header, a module
//! owning a `weight` whose name matches no row is taken for a linear.

use core::fmt;

use crate::checkpoint::CheckpointTensor;
use crate::kind::Kind;

/// The rows of the kind-inference table, in the order they are tried (see the module
/// documentation for what each applies to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// A tensor of a module named `experts`: a fused expert bank at the tensor's path.
    FusedExperts,
    /// A `weight` of 3 or more dimensions with an expert axis.
    ExpertBank,
    /// A normalisation layer, by name or by a 1-D weight.
    Norm,
    /// A convolution, by a 3-D to 5-D weight or by name.
    Conv,
    /// An output head, by name.
    Head,
    /// A token or position embedding, by name.
    Embedding,
    /// The router of a mixture of experts, by name beside experts.
    Router,
    /// A linear with a fused input norm.
    LayernormLinear,
    /// A dense or quantized projection.
    Linear,
    /// The last projection outside the repeated layers whose output size is the vocabulary.
    VocabHead,
}

impl Rule {
    /// Every row, in table order.
    pub const ALL: [Rule; 10] = [
        Rule::FusedExperts,
        Rule::ExpertBank,
        Rule::Norm,
        Rule::Conv,
        Rule::Head,
        Rule::Embedding,
        Rule::Router,
        Rule::LayernormLinear,
        Rule::Linear,
        Rule::VocabHead,
    ];

    /// The row's name in the table (`expert_bank`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Rule::FusedExperts => "fused_experts",
            Rule::ExpertBank => "expert_bank",
            Rule::Norm => "norm",
            Rule::Conv => "conv",
            Rule::Head => "head",
            Rule::Embedding => "embedding",
            Rule::Router => "router",
            Rule::LayernormLinear => "layernorm_linear",
            Rule::Linear => "linear",
            Rule::VocabHead => "vocab_head",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A quantized layout, recognised by the tensors beside a layer's packed weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Quantization {
    /// bitsandbytes 4-bit (NF4 / FP4): `weight` [n, 1] U8, `weight.absmax`, `weight.quant_map`,
    /// `weight.quant_state.*`.
    Bnb4bit,
    /// bitsandbytes LLM.int8(): `weight` I8, `SCB`, `weight_format`.
    Bnb8bit,
    /// GPTQ: `qweight`, `qzeros`, `scales`, `g_idx`.
    Gptq,
    /// AWQ: `qweight`, `qzeros`, `scales`, no `g_idx`.
    Awq,
    /// FP8 with scales: `weight_scale_inv` (block-wise, DeepSeek-V3), or `weight_scale`.
    Fp8,
    /// MLX affine quantization: `weight` U32, `scales`, `biases`.
    Mlx,
    /// compressed-tensors packed integers: `weight_packed`, `weight_scale`, `weight_shape`.
    CompressedTensors,
    /// MXFP4 expert banks (GPT-OSS): `*_blocks`, `*_scales`.
    Mxfp4,
}

impl Quantization {
    /// Every layout.
    pub const ALL: [Quantization; 8] = [
        Quantization::Bnb4bit,
        Quantization::Bnb8bit,
        Quantization::Gptq,
        Quantization::Awq,
        Quantization::Fp8,
        Quantization::Mlx,
        Quantization::CompressedTensors,
        Quantization::Mxfp4,
    ];

    /// The layout's name (`bnb-4bit`, `gptq`, `mlx`, …), as shown in the display.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Quantization::Bnb4bit => "bnb-4bit",
            Quantization::Bnb8bit => "bnb-8bit",
            Quantization::Gptq => "gptq",
            Quantization::Awq => "awq",
            Quantization::Fp8 => "fp8",
            Quantization::Mlx => "mlx",
            Quantization::CompressedTensors => "compressed-tensors",
            Quantization::Mxfp4 => "mxfp4",
        }
    }

    /// Whether `config.json`'s `quant_method` names this layout.
    #[must_use]
    pub fn matches_method(self, method: &str) -> bool {
        match self {
            Quantization::Bnb4bit | Quantization::Bnb8bit => method == "bitsandbytes",
            Quantization::Gptq => method == "gptq",
            Quantization::Awq => method == "awq",
            Quantization::Fp8 => matches!(method, "fp8" | "fbgemm_fp8" | "compressed-tensors"),
            Quantization::Mlx => method == "mlx",
            Quantization::CompressedTensors => method == "compressed-tensors",
            Quantization::Mxfp4 => method == "mxfp4",
        }
    }

    /// The type name of a layer of `kind` in this layout, after the class that holds it
    /// (`Linear4bit`, `QuantLinear`, …).
    const fn type_name(self, kind: Kind) -> &'static str {
        match (kind, self) {
            (Kind::Embedding, _) => "QuantizedEmbedding",
            (Kind::GroupedLinear, _) => "QuantizedGroupedLinear",
            (_, Quantization::Bnb4bit) => "Linear4bit",
            (_, Quantization::Bnb8bit) => "Linear8bitLt",
            (_, Quantization::Gptq) => "QuantLinear",
            (_, Quantization::Awq) => "WQLinear",
            (_, Quantization::Fp8) => "FP8Linear",
            (_, Quantization::Mlx) => "QuantizedLinear",
            (_, Quantization::CompressedTensors) => "CompressedLinear",
            (_, Quantization::Mxfp4) => "Mxfp4Linear",
        }
    }

    /// Whether a parameter is one of the layout's companions rather than the weight or bias.
    pub(super) fn is_companion(parameter: &str) -> bool {
        parameter.starts_with("weight.")
            || matches!(
                parameter,
                "SCB"
                    | "weight_format"
                    | "qzeros"
                    | "scales"
                    | "g_idx"
                    | "weight_scale_inv"
                    | "weight_scale"
                    | "input_scale"
                    | "biases"
                    | "weight_shape"
                    | "weight_zero_point"
                    | "weight_g_idx"
            )
            || parameter.ends_with("_scales")
    }

    /// The layout the parameter names reveal, if any.
    pub(super) fn of(parameters: &[(&str, u32)]) -> Option<Quantization> {
        let has = |name: &str| parameters.iter().any(|(parameter, _)| *parameter == name);
        let has_prefix = |prefix: &str| {
            parameters
                .iter()
                .any(|(parameter, _)| parameter.starts_with(prefix))
        };
        let has_suffix = |suffix: &str| {
            parameters
                .iter()
                .any(|(parameter, _)| parameter.ends_with(suffix))
        };
        Some(if has_prefix("weight.") {
            Quantization::Bnb4bit
        } else if has("SCB") || has("weight_format") {
            Quantization::Bnb8bit
        } else if has("qweight") {
            if has("g_idx") {
                Quantization::Gptq
            } else {
                Quantization::Awq
            }
        } else if has("weight_packed") {
            Quantization::CompressedTensors
        } else if has("weight_scale_inv") || has("weight") && has("weight_scale") {
            Quantization::Fp8
        } else if has("weight") && has("scales") {
            Quantization::Mlx
        } else if has_suffix("_blocks") && has_suffix("_scales") {
            Quantization::Mxfp4
        } else {
            return None;
        })
    }
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the tree builder knows of a leaf candidate and its surroundings.
pub(super) struct Facts<'a> {
    /// The module's own segment.
    pub name: &'a str,
    /// Its parent's segment (`""` for a child of the root).
    pub parent: &'a str,
    /// The tensors it owns, by parameter name, with their positions in `tensors`.
    pub parameters: &'a [(&'a str, u32)],
    /// The checkpoint's tensors.
    pub tensors: &'a [CheckpointTensor],
    /// The parent is a mixture-of-experts block: a sibling is named `experts`, `router`,
    /// `input_linear` or `output_linear` (for `router.layer`, the grandparent's children).
    pub beside_experts: bool,
    /// A sibling is a router by name (`gate`, `router`) and another sibling holds experts.
    pub beside_router: bool,
    /// An ancestor is named `experts`.
    pub in_experts: bool,
    /// An ancestor is an index segment: the module is inside a repeated layer.
    pub in_layer: bool,
    /// The parent is the root.
    pub top_level: bool,
    /// The module is a bank synthesised from a fused `experts` module's tensors.
    pub fused: bool,
    /// `config.json`'s routed-expert count.
    pub config_experts: Option<u64>,
}

/// The outcome of the table for one leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Inference {
    pub rule: Rule,
    pub kind: Kind,
    pub type_name: &'static str,
    pub head: bool,
    pub quantization: Option<Quantization>,
}

impl Facts<'_> {
    fn parameter(&self, name: &str) -> Option<&CheckpointTensor> {
        let (_, position) = self
            .parameters
            .iter()
            .find(|(parameter, _)| *parameter == name)?;
        self.tensors.get(*position as usize)
    }

    fn has(&self, name: &str) -> bool {
        self.parameters
            .iter()
            .any(|(parameter, _)| *parameter == name)
    }

    /// The rank of `weight` when its header was read.
    fn weight_rank(&self) -> Option<usize> {
        Some(self.parameter("weight")?.shape()?.len())
    }
}

fn is_norm_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    // `ln`, `ln_f`, `ln_1`, `ln1`, `ln_pre` (CLIP), `pre_ln` (Molmo), in any case.
    let short_ln = bytes.len() >= 2 && bytes[..2].eq_ignore_ascii_case(b"ln") && {
        let rest = &bytes[2..];
        let rest = rest.strip_prefix(b"_").unwrap_or(rest);
        rest.len() <= 4 && rest.iter().all(u8::is_ascii_alphanumeric)
    };
    let ends_ln = bytes.len() >= 3 && bytes[bytes.len() - 3..].eq_ignore_ascii_case(b"_ln");
    short_ln
        || ends_ln
        || bytes
            .windows(4)
            .any(|window| window.eq_ignore_ascii_case(b"norm"))
}

/// Whether `needle` occurs in `name`: a plain scan, cheaper than a substring searcher's setup on
/// names of a few bytes.
fn contains(name: &str, needle: &str) -> bool {
    name.as_bytes()
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn is_patch_embedding(name: &str) -> bool {
    name.starts_with("patch_embed")
}

fn is_embedding_name(name: &str) -> bool {
    (contains(name, "embed") && name != "embed_out" && !is_patch_embedding(name))
        || matches!(name, "wte" | "wpe" | "tok_embeddings" | "word_embeddings")
}

const fn conv_type_name(rank: Option<usize>) -> &'static str {
    match rank {
        Some(3) => "Conv1d",
        Some(4) => "Conv2d",
        Some(5) => "Conv3d",
        _ => "Conv",
    }
}

/// Runs the table on one leaf candidate; `None` when no row applies.
pub(super) fn infer(facts: &Facts<'_>) -> Option<Inference> {
    let quantization = Quantization::of(facts.parameters);
    let layer = |rule: Rule, kind: Kind, base: &'static str| {
        let type_name = match quantization {
            Some(quantization) if kind.is_linear_family() || kind == Kind::Embedding => {
                quantization.type_name(kind)
            }
            _ => base,
        };
        Some(Inference {
            rule,
            kind,
            type_name,
            head: false,
            quantization,
        })
    };
    if facts.fused {
        return layer(Rule::FusedExperts, Kind::GroupedLinear, "GroupedLinear");
    }
    let has_weight = facts.has("weight") || facts.has("qweight") || facts.has("weight_packed");
    let owns_embedding = facts.has("embedding");
    if !has_weight && !owns_embedding {
        return None;
    }
    // A packed weight's shape is not the layer's: shapes count only without quantization.
    let rank = if quantization.is_some() {
        None
    } else {
        facts.weight_rank()
    };
    let name = facts.name;
    let expert_context = facts.in_experts || facts.beside_router;
    let first_axis_is_experts = facts
        .config_experts
        .zip(facts.parameter("weight").and_then(CheckpointTensor::shape))
        .is_some_and(|(experts, shape)| shape.len() >= 3 && shape.first() == Some(&experts));
    let bank_name = matches!(name, "input_linear" | "output_linear") && facts.beside_router;
    if rank.is_some_and(|rank| rank >= 3) && (expert_context || first_axis_is_experts || bank_name)
        || rank.is_none() && bank_name
    {
        return layer(Rule::ExpertBank, Kind::GroupedLinear, "GroupedLinear");
    }
    if is_norm_name(name) || rank == Some(1) {
        return layer(Rule::Norm, Kind::Norm, "Norm");
    }
    let conv_name = contains(name, "conv")
        || is_patch_embedding(name)
        || name == "proj" && is_patch_embedding(facts.parent);
    if rank.is_some_and(|rank| (3..=5).contains(&rank)) || rank.is_none() && conv_name {
        return layer(Rule::Conv, Kind::Conv, conv_type_name(rank));
    }
    if rank.is_some_and(|rank| rank != 2) {
        return None;
    }
    let head_name = matches!(name, "lm_head" | "embed_out")
        || name == "head" && facts.parent == "shared_head"
        || matches!(name, "ff_out" | "output") && !facts.in_layer;
    if head_name {
        return layer(Rule::Head, Kind::Linear, "Linear").map(|inference| Inference {
            head: true,
            ..inference
        });
    }
    if owns_embedding || is_embedding_name(name) || name == "shared" && facts.top_level {
        return layer(Rule::Embedding, Kind::Embedding, "Embedding");
    }
    let router_name = matches!(name, "gate" | "router")
        || matches!(name, "layer" | "gate" | "linear") && facts.parent == "router";
    if router_name && facts.beside_experts {
        return layer(Rule::Router, Kind::Router, "Router");
    }
    if facts.has("layer_norm_weight") {
        return layer(
            Rule::LayernormLinear,
            Kind::LayernormLinear,
            "LayerNormLinear",
        );
    }
    layer(Rule::Linear, Kind::Linear, "Linear")
}
