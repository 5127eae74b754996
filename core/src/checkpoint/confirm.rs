//! What the whole tree shows beyond each leaf's own row of the rule table: the head found by
//! the vocabulary size, tied embeddings, and where `config.json` and the tensors disagree. Every
//! pass is a loop over the leaves, listed once by [`leaves`] (again after the head is marked).

use crate::checkpoint::module::{CheckpointModule, ChildKey};
use crate::checkpoint::rules::{Quantization, Rule};
use crate::checkpoint::{CheckpointTensor, ModelConfig, Note};
use crate::kind::Kind;
use crate::tree::Role;

/// A leaf layer, as the loop over the tree meets it.
pub(super) struct Leaf<'m> {
    /// Its position among the leaves, in walk order.
    ordinal: usize,
    module: &'m CheckpointModule,
    /// An index segment lies on its path.
    in_layer: bool,
    /// The index under the nearest `experts` container above it.
    expert: Option<usize>,
}

/// Every leaf layer, in walk order, with a loop and no allocation per leaf.
pub(super) fn leaves(root: &CheckpointModule) -> Vec<Leaf<'_>> {
    let mut out = Vec::new();
    let mut stack = vec![(root, false, None, false)];
    while let Some((module, in_layer, expert, is_experts)) = stack.pop() {
        if matches!(module.info().role, Role::Layer(_)) {
            out.push(Leaf {
                ordinal: out.len(),
                module,
                in_layer,
                expert,
            });
            continue;
        }
        for (key, child) in module.children().iter().rev() {
            let (index, experts) = match key {
                ChildKey::Index(index) => (Some(*index), false),
                ChildKey::Name(name) => (None, &**name == "experts"),
            };
            let expert = if is_experts { index.or(expert) } else { expert };
            stack.push((child, in_layer || index.is_some(), expert, experts));
        }
    }
    out
}

/// The child positions leading to the leaf `ordinal` (in walk order).
fn route_of(root: &CheckpointModule, ordinal: usize) -> Option<Vec<usize>> {
    let mut seen = 0;
    let mut route: Vec<usize> = Vec::new();
    let mut stack: Vec<(&CheckpointModule, usize)> = vec![(root, 0)];
    while let Some((module, next)) = stack.last_mut() {
        if matches!(module.info().role, Role::Layer(_)) {
            if seen == ordinal {
                return Some(route);
            }
            seen += 1;
            stack.pop();
            route.pop();
            continue;
        }
        match module.children().get(*next) {
            Some((_, child)) => {
                route.push(*next);
                *next += 1;
                stack.push((child, 0));
            }
            None => {
                stack.pop();
                route.pop();
            }
        }
    }
    None
}

/// The joined path of the leaf `ordinal`.
fn path_of(root: &CheckpointModule, ordinal: usize) -> String {
    let mut segments = Vec::new();
    let mut module = root;
    for position in route_of(root, ordinal).unwrap_or_default() {
        let Some((key, child)) = module.children().get(position) else {
            break;
        };
        segments.push(match key {
            ChildKey::Index(index) => index.to_string(),
            ChildKey::Name(name) => name.to_string(),
        });
        module = child;
    }
    segments.join(".")
}

/// The rows of a leaf's weight, when known and unquantized.
fn weight_rows(module: &CheckpointModule, tensors: &[CheckpointTensor]) -> Option<u64> {
    if module.quantization().is_some() {
        return None;
    }
    let position = module
        .parameters
        .iter()
        .find(|(name, _)| matches!(&**name, "weight" | "embedding"))?
        .1;
    let shape = tensors.get(position as usize)?.shape()?;
    (shape.len() == 2).then(|| shape[0])
}

/// The [`VocabHead`](Rule::VocabHead) row: the last linear outside the repeated layers whose
/// output size is the vocabulary, when no head was found by name.
pub(super) fn mark_vocab_head(
    root: &mut CheckpointModule,
    tensors: &[CheckpointTensor],
    config: Option<&ModelConfig>,
) {
    let found = leaves(root);
    if found.iter().any(|leaf| leaf.module.info().head) {
        return;
    }
    let vocab = config.and_then(|config| config.vocab_size).or_else(|| {
        found
            .iter()
            .filter(|leaf| leaf.module.info().kind() == Some(Kind::Embedding))
            .filter_map(|leaf| weight_rows(leaf.module, tensors))
            .max()
    });
    let Some(vocab) = vocab else {
        return;
    };
    let Some(route) = found
        .iter()
        .rev()
        .find(|leaf| {
            !leaf.in_layer
                && leaf.module.info().kind() == Some(Kind::Linear)
                && weight_rows(leaf.module, tensors) == Some(vocab)
        })
        .and_then(|leaf| route_of(root, leaf.ordinal))
    else {
        return;
    };
    let mut module = root;
    for position in route {
        match module.children.get_mut(position) {
            Some((_, child)) => module = child,
            None => return,
        }
    }
    module.info = module.info.head();
    module.rule = Some(Rule::VocabHead);
}

/// The embedding the head is tied to: with a `config.json` that ties them (or says nothing,
/// transformers' default), no head layer, and an embedding in the language model.
pub(super) fn tied_embedding(
    root: &CheckpointModule,
    found: &[Leaf<'_>],
    config: Option<&ModelConfig>,
) -> Option<String> {
    let config = config?;
    if !config.tie_word_embeddings.unwrap_or(true) {
        return None;
    }
    if found.iter().any(|leaf| leaf.module.info().head) {
        return None;
    }
    found
        .iter()
        .find(|leaf| leaf.module.info().kind() == Some(Kind::Embedding))
        .map(|leaf| path_of(root, leaf.ordinal))
}

/// Where `config.json` and the tensors disagree: the expert count, a declared quantization no
/// layer has.
pub(super) fn confirm(
    root: &CheckpointModule,
    found: &[Leaf<'_>],
    tensors: &[CheckpointTensor],
    config: &ModelConfig,
) -> Vec<Note> {
    let mut notes = Vec::new();
    if let Some(experts) = config.experts {
        // Per-expert layers: the largest index under `experts`, plus one; fused banks: the
        // first axis of their tensor.
        let mut counted: Option<(u64, usize)> = None;
        for leaf in found {
            let count = if leaf.module.info().kind() == Some(Kind::GroupedLinear) {
                leaf.module.parameters.first().and_then(|(_, position)| {
                    tensors.get(*position as usize)?.shape()?.first().copied()
                })
            } else {
                leaf.expert.map(|index| (index as u64).saturating_add(1))
            };
            if let Some(count) = count
                && counted.as_ref().is_none_or(|(seen, _)| count > *seen)
            {
                counted = Some((count, leaf.ordinal));
            }
        }
        if let Some((count, ordinal)) = counted
            && count != experts
        {
            let path = path_of(root, ordinal);
            notes.push(Note::ConfigMismatch {
                problem: format!(
                    "{experts} routed experts configured, but `{path}` implies {count}"
                ),
            });
        }
    }
    if let Some(method) = &config.quantization {
        let known = Quantization::ALL
            .iter()
            .any(|layout| layout.matches_method(method));
        let matched = found.iter().any(|leaf| {
            leaf.module
                .quantization()
                .is_some_and(|layout| layout.matches_method(method))
        });
        if known && !matched {
            notes.push(Note::ConfigMismatch {
                problem: format!(
                    "quantization `{method}` configured, but no layer has its tensors"
                ),
            });
        }
    }
    notes
}
