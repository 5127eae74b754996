//! What a framework tells the PEFT core about its layers ([`LayerInfo`]), and what a checked
//! load hands back ([`LoadPlan`], [`AdaptedLayer`]): the vocabulary between
//! [`Adapter::plan`](crate::peft::Adapter::plan) and the candle and burn installers. Shapes are in
//! PEFT's `[out, in]` terms whatever the framework stores.

use crate::peft::adapter::RawTensor;
use crate::peft::names::FactorNaming;

/// What loading does with an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// Attach it beside the base weights as a named, trainable adapter that can be disabled,
    /// merged and removed (candle's LoRA slots, burn's `LoraAdapter` on the weight).
    Attach,
    /// Fold `W + scale · B A` into the base weights; no adapter remains.
    Merge,
}

/// A leaf layer as far as PEFT is concerned (in PEFT's `[out, in]` terms, whatever the
/// framework's storage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerShape {
    /// A linear: `y = x Wᵀ (+ b)`, `W: [out_features, in_features]`.
    Linear {
        /// Input width.
        in_features: usize,
        /// Output width.
        out_features: usize,
        /// Whether it has a bias `[out_features]`.
        bias: bool,
    },
    /// An embedding table `[num_embeddings, embedding_dim]`.
    Embedding {
        /// Rows.
        num_embeddings: usize,
        /// Columns.
        embedding_dim: usize,
    },
    /// A bank of `experts` linear maps fused in one weight `[E, out, in]` (a `grouped_linear`
    /// layer), adapted as PEFT's `ParamWrapper` adapts a 3-D parameter: `A: [E·r, in]`,
    /// `B: [out, r·E]`.
    Bank {
        /// The number of experts `E`.
        experts: usize,
        /// Each expert's input width.
        in_features: usize,
        /// Each expert's output width.
        out_features: usize,
    },
    /// Any other layer.
    Other,
}

impl LayerShape {
    /// The shape of a bank whose weight is `[experts, rows, cols]`: `[experts, out, in]`, or
    /// `[experts, in, out]` when `transposed` (GPT-OSS, and a candle or burn bank made so).
    #[must_use]
    pub fn bank(experts: usize, rows: usize, cols: usize, transposed: bool) -> LayerShape {
        let (in_features, out_features) = if transposed {
            (rows, cols)
        } else {
            (cols, rows)
        };
        LayerShape::Bank {
            experts,
            in_features,
            out_features,
        }
    }
}

/// How a layer can take an adapter in [`LoadMode::Attach`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// A slot holding adapters by name (candle's `LoraLinear`, `LoraEmbedding`).
    Slot(Vec<String>),
    /// A weight that takes one adapter in place (burn's `Param`); `true` when it has one.
    InPlace(bool),
    /// A plain layer that needs a slot type to take an adapter (merging still works).
    Plain {
        /// The slot type to declare.
        slot: &'static str,
    },
    /// Shared behind an `Arc` or `Rc`: can be read, not changed.
    ReadOnly,
}

/// One leaf layer, as the framework reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// The node's type name.
    pub type_name: &'static str,
    /// What it is.
    pub shape: LayerShape,
    /// How it takes an adapter.
    pub attachment: Attachment,
}

/// One layer's factors, checked, in PEFT's layout (`A: [r, in]`, `B: [out, r]`; for an
/// embedding `A: [r, num_embeddings]`, `B: [embedding_dim, r]`).
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedFactors<'a> {
    /// The layer's path.
    pub path: String,
    /// A linear's or an embedding's.
    pub naming: FactorNaming,
    /// The rank.
    pub rank: u32,
    /// The alpha.
    pub alpha: f64,
    /// The scale: `alpha / rank`, or `alpha / √rank` with rsLoRA.
    pub scale: f64,
    /// Factor A.
    pub a: &'a RawTensor,
    /// Factor B.
    pub b: &'a RawTensor,
}

/// One parameter of a module saved whole, checked against its layer.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedParameter<'a> {
    /// The layer's path.
    pub path: String,
    /// `weight` or `bias`.
    pub param: String,
    /// In PEFT's layout (a linear's weight `[out, in]`).
    pub tensor: &'a RawTensor,
}

/// Everything a load will do, checked: factors and whole parameters, each in walk order,
/// borrowing the tensors of the [`Adapter`](crate::peft::Adapter) it was planned from.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadPlan<'a> {
    /// The layers that get factors.
    pub factors: Vec<PlannedFactors<'a>>,
    /// The parameters replaced whole (`modules_to_save`).
    pub parameters: Vec<PlannedParameter<'a>>,
}

/// One layer an adapter was loaded into or saved from.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptedLayer {
    /// The layer's path.
    pub path: String,
    /// The rank.
    pub rank: u32,
    /// The alpha.
    pub alpha: f64,
    /// The scale of `B A`.
    pub scale: f64,
}

impl LoadPlan<'_> {
    /// The adapted layers, in walk order.
    #[must_use]
    pub fn adapted(&self) -> Vec<AdaptedLayer> {
        self.factors
            .iter()
            .map(|planned| AdaptedLayer {
                path: planned.path.clone(),
                rank: planned.rank,
                alpha: planned.alpha,
                scale: planned.scale,
            })
            .collect()
    }
}

/// One layer's adapters, as PEFT's `PeftModel.get_layer_status` reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerStatus {
    /// The layer's path.
    pub path: String,
    /// The adapters it holds, in the order they were attached.
    pub adapters: Vec<String>,
    /// The adapter applied in the forward pass (or merged), if any.
    pub active: Option<String>,
    /// Whether the active adapter is merged into the base weight.
    pub merged: bool,
    /// Whether adapters are enabled (`false` between `disable_adapters` and `enable_adapters`).
    pub enabled: bool,
}

/// Parameter counts, as PEFT's `PeftModel.get_nb_trainable_parameters` gives them: every element
/// of every parameter of the layers the crate knows, and of those the adapters' factors (the
/// parameters LoRA trains; base weights are frozen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParameterCounts {
    /// Elements of the adapters' factors.
    pub trainable: usize,
    /// Elements of all parameters, factors included.
    pub total: usize,
}
