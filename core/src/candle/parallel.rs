//! The weight shapes a [`ParallelPlan`](crate::parallel::ParallelPlan) checks its splits against,
//! read from candle layers.

use candle_nn::{Embedding, Linear};

use crate::candle::bank::ExpertBank;
use crate::candle::lora::{LoraEmbedding, LoraLinear};
use crate::walk::Node;

/// The weight shape of a candle layer as a parallel plan reads it, in PyTorch's layout: a
/// linear's `[out, in]`, an embedding's `[vocabulary, hidden]`, an [`ExpertBank`]'s
/// `[experts, out, in]` whichever way it is stored, the experts at the node's `expert_axis`;
/// `None` for a node of another type.
///
/// ```ignore
/// let plan = ParallelPlan::builder(ParallelConfig::new(4, 2, 1))
///     .sizes(moduletree::candle::layer_shape)
///     .build(&model)?;
/// ```
#[must_use]
pub fn layer_shape(node: &Node<'_, '_>) -> Option<Vec<usize>> {
    if let Some(slot) = node.downcast_ref::<LoraLinear>() {
        Some(slot.base().weight().dims().to_vec())
    } else if let Some(linear) = node.downcast_ref::<Linear>() {
        Some(linear.weight().dims().to_vec())
    } else if let Some(slot) = node.downcast_ref::<LoraEmbedding>() {
        Some(slot.base().embeddings().dims().to_vec())
    } else if let Some(embedding) = node.downcast_ref::<Embedding>() {
        Some(embedding.embeddings().dims().to_vec())
    } else {
        node.downcast_ref::<ExpertBank>().map(|bank| {
            let mut shape = vec![bank.out_features(), bank.in_features()];
            let axis = usize::from(node.info().expert_axis).min(2);
            shape.insert(axis, bank.num_experts());
            shape
        })
    }
}
