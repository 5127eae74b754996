//! What the whole tree shows beyond each leaf's own row of the rule table: the head found by
//! the vocabulary size, tied embeddings, and where `config.json` and the tensors disagree. Every
//! pass is a loop over the leaves.

use crate::checkpoint::module::{CheckpointModule, ChildKey};
use crate::checkpoint::rules::Rule;
use crate::checkpoint::{CheckpointTensor, ModelConfig, Note};
use crate::kind::Kind;
use crate::tree::Role;

/// A leaf with the path of child positions that leads to it.
struct Leaf<'m> {
    route: Vec<usize>,
    path: String,
    module: &'m CheckpointModule,
    in_layer: bool,
}

/// Every leaf layer, in walk order, with a loop.
fn leaves(root: &CheckpointModule) -> Vec<Leaf<'_>> {
    let mut out = Vec::new();
    let mut stack = vec![(root, Vec::new(), String::new(), false)];
    while let Some((module, route, path, in_layer)) = stack.pop() {
        if matches!(module.info().role, Role::Layer(_)) {
            out.push(Leaf {
                route,
                path,
                module,
                in_layer,
            });
            continue;
        }
        for (position, (key, child)) in module.children().iter().enumerate().rev() {
            let (segment, index) = match key {
                ChildKey::Index(index) => (index.to_string(), true),
                ChildKey::Name(name) => (name.clone(), false),
            };
            let mut child_route = route.clone();
            child_route.push(position);
            let child_path = if path.is_empty() {
                segment
            } else {
                format!("{path}.{segment}")
            };
            stack.push((child, child_route, child_path, in_layer || index));
        }
    }
    out
}

/// The rows of a leaf's weight, when known and unquantized.
fn weight_rows(module: &CheckpointModule, tensors: &[CheckpointTensor]) -> Option<u64> {
    if module.quantization().is_some() {
        return None;
    }
    let position = module
        .parameters
        .iter()
        .find(|(name, _)| name == "weight" || name == "embedding")?
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
        .map(|leaf| leaf.route.clone())
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
    config: Option<&ModelConfig>,
) -> Option<String> {
    let config = config?;
    if !config.tie_word_embeddings.unwrap_or(true) {
        return None;
    }
    let found = leaves(root);
    if found.iter().any(|leaf| leaf.module.info().head) {
        return None;
    }
    found
        .into_iter()
        .find(|leaf| leaf.module.info().kind() == Some(Kind::Embedding))
        .map(|leaf| leaf.path)
}

/// Where `config.json` and the tensors disagree: the expert count, a declared quantization no
/// layer has.
pub(super) fn confirm(
    root: &CheckpointModule,
    tensors: &[CheckpointTensor],
    config: &ModelConfig,
) -> Vec<Note> {
    let mut notes = Vec::new();
    let found = leaves(root);
    if let Some(experts) = config.experts {
        // Per-expert layers: the largest index under `experts`, plus one; fused banks: the
        // first axis of their tensor.
        let mut counted: Option<(u64, String)> = None;
        for leaf in &found {
            let count = if leaf.module.info().kind() == Some(Kind::GroupedLinear) {
                leaf.module.parameters.first().and_then(|(_, position)| {
                    tensors.get(*position as usize)?.shape()?.first().copied()
                })
            } else {
                leaf.path
                    .split('.')
                    .collect::<Vec<_>>()
                    .windows(2)
                    .find(|pair| pair[0] == "experts")
                    .and_then(|pair| pair[1].parse::<u64>().ok())
                    .map(|index| index.saturating_add(1))
            };
            if let Some(count) = count
                && counted.as_ref().is_none_or(|(seen, _)| count > *seen)
            {
                counted = Some((count, leaf.path.clone()));
            }
        }
        if let Some((count, path)) = counted
            && count != experts
        {
            notes.push(Note::ConfigMismatch {
                problem: format!(
                    "{experts} routed experts configured, but `{path}` implies {count}"
                ),
            });
        }
    }
    if let Some(method) = &config.quantization {
        let known = [
            "bitsandbytes",
            "gptq",
            "awq",
            "fp8",
            "mlx",
            "compressed-tensors",
            "mxfp4",
        ];
        let matched = found.iter().any(|leaf| {
            leaf.module
                .quantization()
                .is_some_and(|layout| layout.matches_method(method))
        });
        if known.contains(&method.as_str()) && !matched {
            notes.push(Note::ConfigMismatch {
                problem: format!(
                    "quantization `{method}` configured, but no layer has its tensors"
                ),
            });
        }
    }
    notes
}
