//! Building a checkpoint's module tree from its tensor names, with loops only.
//!
//! Names arrive sorted, so every name under a module path (`model.layers.3.`) forms one run: a
//! stack of the open modules replaces any lookup. The modules live in an arena whose ids put
//! every parent before its children; the passes that need ancestors walk it forwards, the one
//! that assembles the nested [`CheckpointModule`]s walks it backwards, so no pass recurses over
//! untrusted input. A name with an empty segment or more than [`MAX_DEPTH`] segments is left out
//! (and reported); the depth limit also bounds the recursion of walks over the finished tree.

use core::cmp::Ordering;
use std::collections::HashMap;

use crate::checkpoint::CheckpointTensor;
use crate::checkpoint::module::{CheckpointModule, ChildKey};
use crate::checkpoint::rules::{self, Facts, Inference, Quantization, Rule};
use crate::kind::Kind;
use crate::tree::NodeInfo;

/// The most segments a tensor name may have to take part in the tree.
pub const MAX_DEPTH: usize = 64;

/// The order in which transformers' fused expert modules register their parameters: PEFT nests
/// two adapted parameters of one module in that order, which a checkpoint does not keep.
const REGISTRATION_ORDER: [&str; 4] = ["gate_up_proj", "gate_proj", "up_proj", "down_proj"];

/// The suffixes of a fused expert bank's companion tensors (GPT-OSS).
const FUSED_COMPANIONS: [&str; 4] = ["_bias", "_blocks", "_scales", "_scale"];

const ROOT: u32 = 0;

struct Draft {
    segment: String,
    /// The index the segment writes, if it writes one (parsed once: sorting asks often).
    index: Option<usize>,
    parent: u32,
    children: Vec<u32>,
    parameters: Vec<(String, u32)>,
    /// Folded into an ancestor's parameters, or moved: no longer part of the tree.
    dead: bool,
    /// A bank synthesised from a fused `experts` module's tensor.
    fused: bool,
}

impl Draft {
    fn new(segment: String, parent: u32) -> Draft {
        Draft {
            index: ChildKey::index(&segment),
            segment,
            parent,
            children: Vec::new(),
            parameters: Vec::new(),
            dead: false,
            fused: false,
        }
    }
}

/// The finished tree and what could not take part in it.
pub(super) struct Built {
    pub root: CheckpointModule,
    pub unusable: Vec<String>,
}

/// Builds the tree of `tensors`, sorted by name.
pub(super) fn build(tensors: &[CheckpointTensor], config_experts: Option<u64>) -> Built {
    let mut nodes = vec![Draft::new(String::new(), ROOT)];
    let mut unusable = Vec::new();
    // `open[d]` is the module at depth `d` of the previous name; `open[0]` the root.
    let mut open: Vec<u32> = vec![ROOT];
    let mut segments: Vec<&str> = Vec::new();
    for (position, tensor) in tensors.iter().enumerate() {
        segments.clear();
        segments.extend(tensor.name.split('.'));
        if segments.len() > MAX_DEPTH || segments.iter().any(|segment| segment.is_empty()) {
            unusable.push(tensor.name.clone());
            continue;
        }
        let Some((parameter, module)) = segments.split_last() else {
            continue;
        };
        let mut depth = 0;
        while depth < module.len()
            && open
                .get(depth + 1)
                .is_some_and(|&id| nodes[id as usize].segment == module[depth])
        {
            depth += 1;
        }
        open.truncate(depth + 1);
        for segment in &module[depth..] {
            let parent = open[open.len() - 1];
            let id = nodes.len() as u32;
            nodes.push(Draft::new((*segment).to_owned(), parent));
            nodes[parent as usize].children.push(id);
            open.push(id);
        }
        let owner = open[open.len() - 1] as usize;
        nodes[owner]
            .parameters
            .push(((*parameter).to_owned(), position as u32));
    }
    fold_parameter_state(&mut nodes);
    split_fused_experts(&mut nodes);
    for id in 0..nodes.len() {
        let mut children = std::mem::take(&mut nodes[id].children);
        children.retain(|&child| !nodes[child as usize].dead);
        let registered = |child: &Draft| {
            if child.fused {
                REGISTRATION_ORDER
                    .iter()
                    .position(|name| *name == child.segment)
                    .unwrap_or(REGISTRATION_ORDER.len())
            } else {
                0
            }
        };
        children.sort_by(|&left, &right| {
            let (left, right) = (&nodes[left as usize], &nodes[right as usize]);
            registered(left)
                .cmp(&registered(right))
                .then_with(|| match (left.index, right.index) {
                    (Some(left), Some(right)) => left.cmp(&right),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => left.segment.cmp(&right.segment),
                })
        });
        nodes[id].children = children;
    }
    let infos = infer(&nodes, tensors, config_experts);
    Built {
        root: assemble(nodes, infos),
        unusable,
    }
}

/// A child named like one of its parent's parameters is that parameter's state (bitsandbytes'
/// `weight.absmax`, `weight.quant_state.*`): its tensors become the parent's, prefixed.
fn fold_parameter_state(nodes: &mut [Draft]) {
    // Forwards: a parent's fate is known before its children's.
    let mut owner: Vec<Option<(u32, String)>> = vec![None; nodes.len()];
    for id in 1..nodes.len() {
        let parent = nodes[id].parent as usize;
        let inherited = match &owner[parent] {
            Some((owner, prefix)) => Some((*owner, format!("{prefix}.{}", nodes[id].segment))),
            None => nodes[parent]
                .parameters
                .iter()
                .any(|(parameter, _)| *parameter == nodes[id].segment)
                .then(|| (parent as u32, nodes[id].segment.clone())),
        };
        if let Some((owner_id, prefix)) = inherited {
            let parameters = std::mem::take(&mut nodes[id].parameters);
            nodes[owner_id as usize].parameters.extend(
                parameters
                    .into_iter()
                    .map(|(name, position)| (format!("{prefix}.{name}"), position)),
            );
            nodes[id].dead = true;
            owner[id] = Some((owner_id, prefix));
        }
    }
    for node in nodes.iter_mut() {
        node.parameters.sort_by(|left, right| left.0.cmp(&right.0));
    }
}

/// transformers 5 keeps routed experts fused: each tensor of a module named `experts`
/// (`gate_up_proj` [E, 2I, H]) is a bank at the tensor's own path, owning its companions
/// (`gate_up_proj_bias`, `_blocks`, `_scales`).
fn split_fused_experts(nodes: &mut Vec<Draft>) {
    for id in 0..nodes.len() {
        if nodes[id].dead || nodes[id].segment != "experts" || nodes[id].parameters.is_empty() {
            continue;
        }
        let parameters = std::mem::take(&mut nodes[id].parameters);
        let mut banks: HashMap<String, u32> = HashMap::new();
        for (name, position) in parameters {
            let base = FUSED_COMPANIONS
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|base| !base.is_empty()))
                .unwrap_or(&name)
                .to_owned();
            let bank = *banks.entry(base.clone()).or_insert_with(|| {
                let bank = nodes.len() as u32;
                let mut draft = Draft::new(base, id as u32);
                draft.fused = true;
                nodes.push(draft);
                nodes[id].children.push(bank);
                bank
            });
            nodes[bank as usize].parameters.push((name, position));
        }
    }
}

/// The inferred facts of every node, forwards so that ancestors' flags are known.
fn infer(
    nodes: &[Draft],
    tensors: &[CheckpointTensor],
    config_experts: Option<u64>,
) -> Vec<(NodeInfo, Option<Rule>, Option<Quantization>)> {
    const EXPERT_NAMES: [&str; 3] = ["experts", "input_linear", "output_linear"];
    // What each node's children are named, found once: a node with 256 experts would
    // otherwise scan them for each of its children.
    let mut experts_child = vec![false; nodes.len()];
    let mut router_child = vec![false; nodes.len()];
    let mut gate_child = vec![false; nodes.len()];
    for node in nodes.iter().skip(1).filter(|node| !node.dead) {
        let parent = node.parent as usize;
        match node.segment.as_str() {
            segment if EXPERT_NAMES.contains(&segment) => experts_child[parent] = true,
            "router" => router_child[parent] = true,
            "gate" => gate_child[parent] = true,
            _ => {}
        }
    }
    let mut in_layer = vec![false; nodes.len()];
    let mut in_experts = vec![false; nodes.len()];
    let mut infos = Vec::with_capacity(nodes.len());
    for (id, node) in nodes.iter().enumerate() {
        if id == ROOT as usize {
            infos.push((NodeInfo::module("Checkpoint"), None, None));
            continue;
        }
        let parent = node.parent;
        let parent_node = &nodes[parent as usize];
        let is_index = node.index.is_some();
        in_layer[id] = in_layer[parent as usize] || is_index;
        let is_experts = node.segment == "experts";
        in_experts[id] =
            in_experts[parent as usize] || parent_node.segment == "experts" && parent != ROOT;
        if node.dead {
            infos.push((NodeInfo::module("Module"), None, None));
            continue;
        }
        // `router.layer`: the mixture-of-experts block is the grandparent.
        let block = if parent_node.segment == "router" {
            parent_node.parent
        } else {
            parent
        };
        let beside_experts = experts_child[block as usize];
        let (parent_index, block_index) = (parent as usize, block as usize);
        let beside_router =
            router_child[parent_index] || gate_child[parent_index] && experts_child[block_index];
        // An index segment takes the name of its container, so `experts.3` reads as `experts`.
        let name = if is_index {
            parent_node.segment.as_str()
        } else {
            node.segment.as_str()
        };
        let mut info;
        let mut rule = None;
        let mut quantization = None;
        if node.children.is_empty() && !node.parameters.is_empty() {
            let facts = Facts {
                name,
                parent: &parent_node.segment,
                parameters: &node.parameters,
                tensors,
                beside_experts,
                beside_router,
                in_experts: in_experts[id],
                in_layer: in_layer[id],
                top_level: parent == ROOT,
                fused: node.fused,
                config_experts,
            };
            match rules::infer(&facts) {
                Some(Inference {
                    rule: found,
                    kind,
                    type_name,
                    head,
                    quantization: layout,
                }) => {
                    info = NodeInfo::layer(type_name, kind);
                    if head {
                        info = info.head();
                    }
                    rule = Some(found);
                    quantization = layout;
                }
                None => info = NodeInfo::module("Module"),
            }
        } else if !node.children.is_empty()
            && node.parameters.is_empty()
            && node
                .children
                .iter()
                .all(|&child| nodes[child as usize].index.is_some())
        {
            info = NodeInfo::container("ModuleList");
        } else {
            info = NodeInfo::module("Module");
        }
        if is_experts && !in_experts[id] && info.kind() != Some(Kind::GroupedLinear) {
            info = info.expert();
        }
        // A checkpoint has no types: a module named like the shared experts of Qwen2-MoE
        // (`shared_expert`) and DeepSeek (`shared_experts`) beside routed ones is a shared expert.
        if matches!(node.segment.as_str(), "shared_expert" | "shared_experts")
            && experts_child[parent as usize]
        {
            info = info.shared_expert();
        }
        infos.push((info, rule, quantization));
    }
    infos
}

/// Assembles the nested modules, children before parents.
fn assemble(
    nodes: Vec<Draft>,
    infos: Vec<(NodeInfo, Option<Rule>, Option<Quantization>)>,
) -> CheckpointModule {
    let mut built: Vec<Option<(ChildKey, CheckpointModule)>> = Vec::with_capacity(nodes.len());
    built.resize_with(nodes.len(), || None);
    for (id, (node, (info, rule, quantization))) in nodes.into_iter().zip(infos).enumerate().rev() {
        if node.dead {
            continue;
        }
        let children = node
            .children
            .iter()
            .filter_map(|&child| built[child as usize].take())
            .collect();
        let module = CheckpointModule {
            info,
            rule,
            quantization,
            parameters: node.parameters,
            children,
        };
        let key = match node.index {
            Some(index) => ChildKey::Index(index),
            None => ChildKey::Name(node.segment),
        };
        built[id] = Some((key, module));
    }
    match built.first_mut().and_then(Option::take) {
        Some((_, root)) => root,
        None => CheckpointModule::empty_root(),
    }
}
