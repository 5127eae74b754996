//! Building a checkpoint's module tree from its tensor names, with loops only.
//!
//! Names arrive sorted, so every name under a module path (`model.layers.3.`) forms one run: a
//! stack of the open modules replaces any lookup, and only the part of a name not shared with
//! the previous one is split. The modules live in an arena whose ids put every parent before its
//! children; the passes that need ancestors walk it forwards, the one that assembles the nested
//! [`CheckpointModule`]s walks it backwards, so no pass recurses over untrusted input. Children
//! and parameters are kept in flat lists grouped by module (a counting sort), not in a list per
//! module, and names borrow the tensor names until the finished tree interns them. A name with
//! an empty segment or more than [`MAX_DEPTH`] segments is left out (and reported); the depth
//! limit also bounds the recursion of walks over the finished tree.

use core::cmp::Ordering;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::checkpoint::CheckpointTensor;
use crate::checkpoint::module::{CheckpointModule, ChildKey, Name};
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

/// A module of the tree being built; its segment borrows a tensor name.
struct Draft<'t> {
    segment: &'t str,
    /// The index the segment writes, if it writes one (parsed once: sorting asks often).
    index: Option<usize>,
    /// The length of the module's path in bytes: its parameters' names start one past it.
    path_len: usize,
    parent: u32,
    /// Folded into an ancestor's parameters: no longer part of the tree.
    dead: bool,
    /// A bank synthesised from a fused `experts` module's tensor.
    fused: bool,
}

impl<'t> Draft<'t> {
    fn new(segment: &'t str, path_len: usize, parent: u32) -> Draft<'t> {
        Draft {
            index: ChildKey::index(segment),
            segment,
            path_len,
            parent,
            dead: false,
            fused: false,
        }
    }
}

/// A tensor owned by a module: its name relative to the module, and its position.
#[derive(Clone, Copy)]
struct Parameter<'t> {
    module: u32,
    name: &'t str,
    position: u32,
}

/// Items grouped by module: module `m`'s are `items[starts[m]..starts[m + 1]]`.
struct Grouped<T> {
    starts: Vec<usize>,
    items: Vec<T>,
}

impl<T: Copy> Grouped<T> {
    /// Groups `items` by the module `module_of` gives each (a counting sort: stable, linear).
    fn new(modules: usize, items: &[T], module_of: impl Fn(&T) -> u32) -> Grouped<T> {
        let mut starts = vec![0; modules + 1];
        for item in items {
            starts[module_of(item) as usize + 1] += 1;
        }
        for module in 0..modules {
            starts[module + 1] += starts[module];
        }
        let mut next = starts.clone();
        // Every slot is written exactly once below.
        let mut placed = items.to_vec();
        for item in items {
            let slot = &mut next[module_of(item) as usize];
            placed[*slot] = *item;
            *slot += 1;
        }
        Grouped {
            starts,
            items: placed,
        }
    }

    fn of(&self, module: usize) -> &[T] {
        &self.items[self.starts[module]..self.starts[module + 1]]
    }

    fn of_mut(&mut self, module: usize) -> &mut [T] {
        &mut self.items[self.starts[module]..self.starts[module + 1]]
    }
}

/// The finished tree and what could not take part in it.
pub(super) struct Built {
    pub root: CheckpointModule,
    pub unusable: Vec<String>,
}

/// The modules and parameters of the names, before any fold.
struct Parsed<'t> {
    nodes: Vec<Draft<'t>>,
    parameters: Vec<Parameter<'t>>,
    unusable: Vec<String>,
}

/// Builds the tree of `tensors`, sorted by name.
pub(super) fn build(tensors: &[CheckpointTensor], config_experts: Option<u64>) -> Built {
    let Parsed {
        mut nodes,
        mut parameters,
        unusable,
    } = parse(tensors);
    fold_parameter_state(&mut nodes, &mut parameters, tensors);
    split_fused_experts(&mut nodes, &mut parameters);
    let grouped = Grouped::new(nodes.len(), &parameters, |parameter| parameter.module);
    let mut parameters = Grouped {
        items: grouped
            .items
            .iter()
            .map(|parameter| (parameter.name, parameter.position))
            .collect(),
        starts: grouped.starts,
    };
    for module in 0..nodes.len() {
        let owned = parameters.of_mut(module);
        if owned.len() > 1 {
            owned.sort_by(|left, right| left.0.cmp(right.0));
        }
    }
    let children: Vec<u32> = (1..nodes.len() as u32)
        .filter(|&id| !nodes[id as usize].dead)
        .collect();
    let mut children = Grouped::new(nodes.len(), &children, |&id| nodes[id as usize].parent);
    for module in 0..nodes.len() {
        let owned = children.of_mut(module);
        if owned.len() > 1 {
            sort_children(&nodes, owned);
        }
    }
    let infos = infer(&nodes, &children, &parameters, tensors, config_experts);
    Built {
        root: assemble(&nodes, &children, &parameters, infos),
        unusable,
    }
}

/// The modules and parameters the names make, with the names that cannot take part.
///
/// Consecutive names share a prefix: the modules of the previous name whose path and the dot
/// after it are shared stay open, and only the rest of the name is split.
fn parse(tensors: &[CheckpointTensor]) -> Parsed<'_> {
    let mut parsed = Parsed {
        nodes: Vec::with_capacity(tensors.len() * 2),
        parameters: Vec::with_capacity(tensors.len()),
        unusable: Vec::new(),
    };
    let nodes = &mut parsed.nodes;
    nodes.push(Draft::new("", 0, ROOT));
    // The modules of the previous usable name, outermost first, with where each one's path
    // ends in that name; `open[0]` is the root.
    let mut open: Vec<(u32, usize)> = vec![(ROOT, 0)];
    let mut previous = "";
    // The segments of the part of a name not shared with the previous one, with their ends.
    let mut segments: Vec<(&str, usize)> = Vec::new();
    for (position, tensor) in tensors.iter().enumerate() {
        let name = tensor.name.as_str();
        let shared = common_prefix(previous, name);
        let kept = 1 + open[1..]
            .iter()
            .take_while(|(_, end)| *end < shared)
            .count();
        let start = match open[kept - 1] {
            (ROOT, _) => 0,
            (_, end) => end + 1,
        };
        segments.clear();
        let mut from = start;
        for (offset, byte) in name.as_bytes()[start..].iter().enumerate() {
            if *byte == b'.' {
                let end = start + offset;
                segments.push((&name[from..end], end));
                from = end + 1;
            }
        }
        segments.push((&name[from..], name.len()));
        let depth = kept - 1 + segments.len();
        if depth > MAX_DEPTH || segments.iter().any(|(segment, _)| segment.is_empty()) {
            parsed.unusable.push(tensor.name.clone());
            continue;
        }
        previous = name;
        open.truncate(kept);
        let Some(((parameter, _), modules)) = segments.split_last() else {
            continue;
        };
        for &(segment, end) in modules {
            let parent = open[open.len() - 1].0;
            open.push((nodes.len() as u32, end));
            nodes.push(Draft::new(segment, end, parent));
        }
        parsed.parameters.push(Parameter {
            module: open[open.len() - 1].0,
            name: parameter,
            position: position as u32,
        });
    }
    parsed
}

/// The length in bytes of the longest common prefix of `left` and `right`.
fn common_prefix(left: &str, right: &str) -> usize {
    left.as_bytes()
        .iter()
        .zip(right.as_bytes())
        .take_while(|(left, right)| left == right)
        .count()
}

/// Orders siblings: fused banks in registration order, then indices numerically, then names.
fn sort_children(nodes: &[Draft<'_>], children: &mut [u32]) {
    let registered = |child: &Draft<'_>| {
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
                (None, None) => left.segment.cmp(right.segment),
            })
    });
}

/// A child named like one of its parent's parameters is that parameter's state (bitsandbytes'
/// `weight.absmax`, `weight.quant_state.*`): its tensors become the parent's, named from the
/// parent's path on (`weight.absmax`).
fn fold_parameter_state<'t>(
    nodes: &mut [Draft<'t>],
    parameters: &mut [Parameter<'t>],
    tensors: &'t [CheckpointTensor],
) {
    let grouped = Grouped::new(nodes.len(), parameters, |parameter| parameter.module);
    // Forwards: a parent's fate is known before its children's.
    let mut owner: Vec<Option<u32>> = vec![None; nodes.len()];
    let mut any = false;
    for id in 1..nodes.len() {
        let parent = nodes[id].parent as usize;
        let segment = nodes[id].segment;
        owner[id] = owner[parent].or_else(|| {
            grouped
                .of(parent)
                .iter()
                .any(|parameter| parameter.name == segment)
                .then_some(parent as u32)
        });
        if owner[id].is_some() {
            nodes[id].dead = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    for parameter in parameters.iter_mut() {
        if let Some(module) = owner[parameter.module as usize] {
            let start = match module {
                ROOT => 0,
                module => nodes[module as usize].path_len + 1,
            };
            if let Some(name) = tensors
                .get(parameter.position as usize)
                .and_then(|tensor| tensor.name.get(start..))
            {
                parameter.name = name;
            }
            parameter.module = module;
        }
    }
}

/// transformers 5 keeps routed experts fused: each tensor of a module named `experts`
/// (`gate_up_proj` [E, 2I, H]) is a bank at the tensor's own path, owning its companions
/// (`gate_up_proj_bias`, `_blocks`, `_scales`) and its state (`down_proj.bias`, folded into a
/// parameter name with a dot). A companion whose bank's name is already a submodule of `experts`
/// stays a bank of its own name, so that no two siblings share a path.
fn split_fused_experts<'t>(nodes: &mut Vec<Draft<'t>>, parameters: &mut [Parameter<'t>]) {
    let is_experts = |node: &Draft<'_>| !node.dead && node.segment == "experts";
    let fused = |parameter: &Parameter<'_>| {
        parameter.module != ROOT && is_experts(&nodes[parameter.module as usize])
    };
    if !parameters.iter().any(fused) {
        return;
    }
    let submodules: FxHashSet<(u32, &str)> = nodes
        .iter()
        .filter(|node| !node.dead && is_experts(&nodes[node.parent as usize]))
        .map(|node| (node.parent, node.segment))
        .collect();
    let mut banks: FxHashMap<(u32, &str), u32> = FxHashMap::default();
    for parameter in parameters.iter_mut() {
        let experts = parameter.module;
        if experts == ROOT || !is_experts(&nodes[experts as usize]) {
            continue;
        }
        let name = parameter.name;
        let own = name.split('.').next().unwrap_or(name);
        let base = FUSED_COMPANIONS
            .iter()
            .find_map(|suffix| own.strip_suffix(suffix).filter(|base| !base.is_empty()))
            .filter(|base| !submodules.contains(&(experts, *base)))
            .unwrap_or(own);
        let path_len = nodes[experts as usize].path_len + 1 + base.len();
        parameter.module = *banks.entry((experts, base)).or_insert_with(|| {
            let mut draft = Draft::new(base, path_len, experts);
            draft.fused = true;
            nodes.push(draft);
            nodes.len() as u32 - 1
        });
    }
}

/// The inferred facts of every node, forwards so that ancestors' flags are known.
fn infer(
    nodes: &[Draft<'_>],
    children: &Grouped<u32>,
    parameters: &Grouped<(&str, u32)>,
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
        match node.segment {
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
            parent_node.segment
        } else {
            node.segment
        };
        let mut info;
        let mut rule = None;
        let mut quantization = None;
        let (children, parameters) = (children.of(id), parameters.of(id));
        if children.is_empty() && !parameters.is_empty() {
            let facts = Facts {
                name,
                parent: parent_node.segment,
                parameters,
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
        } else if !children.is_empty()
            && parameters.is_empty()
            && children
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
        if matches!(node.segment, "shared_expert" | "shared_experts")
            && experts_child[parent as usize]
        {
            info = info.shared_expert();
        }
        infos.push((info, rule, quantization));
    }
    infos
}

/// Assembles the nested modules, children before parents, interning their names.
fn assemble(
    nodes: &[Draft<'_>],
    children: &Grouped<u32>,
    parameters: &Grouped<(&str, u32)>,
    infos: Vec<(NodeInfo, Option<Rule>, Option<Quantization>)>,
) -> CheckpointModule {
    let mut names = Names::default();
    let mut built: Vec<Option<(ChildKey, CheckpointModule)>> = Vec::with_capacity(nodes.len());
    built.resize_with(nodes.len(), || None);
    for (id, (info, rule, quantization)) in infos.into_iter().enumerate().rev() {
        let node = &nodes[id];
        if node.dead {
            continue;
        }
        let mut assembled = Vec::with_capacity(children.of(id).len());
        assembled.extend(
            children
                .of(id)
                .iter()
                .filter_map(|&child| built[child as usize].take()),
        );
        let parameters = parameters
            .of(id)
            .iter()
            .map(|&(name, position)| (names.get(name), position))
            .collect();
        let module = CheckpointModule {
            info,
            rule,
            quantization,
            parameters,
            children: assembled,
        };
        let key = match node.index {
            Some(index) => ChildKey::Index(index),
            None => ChildKey::Name(names.get(node.segment)),
        };
        built[id] = Some((key, module));
    }
    match built.first_mut().and_then(Option::take) {
        Some((_, root)) => root,
        None => CheckpointModule::empty_root(),
    }
}

/// One shared copy of each distinct segment and parameter name: a checkpoint repeats a few
/// hundred names (`self_attn`, `q_proj`, `weight`) across tens of thousands of modules.
#[derive(Default)]
struct Names<'t> {
    known: FxHashMap<&'t str, Name>,
}

impl<'t> Names<'t> {
    fn get(&mut self, name: &'t str) -> Name {
        self.known
            .entry(name)
            .or_insert_with(|| Name::from(name))
            .clone()
    }
}
