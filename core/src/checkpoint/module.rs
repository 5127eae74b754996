//! A checkpoint's modules as a [`ModuleTree`]: the tree tensor names make, with kinds inferred
//! from names and shapes.

use std::collections::HashMap;

use crate::checkpoint::Checkpoint;
use crate::checkpoint::header::TensorInfo;
use crate::kind::Kind;
use crate::path::is_index;
use crate::schema::Schema;
use crate::tree::{ModuleTree, NodeInfo, Role};
use crate::walk::{Walker, WalkerMut};

/// A module of a [`Checkpoint`]: the parameters it owns and its submodules.
#[derive(Clone, Debug)]
pub struct CheckpointModule {
    info: NodeInfo,
    /// Parameter names and their positions in the checkpoint's tensors.
    pub(super) parameters: Vec<(String, usize)>,
    children: Vec<(ChildKey, CheckpointModule)>,
}

impl CheckpointModule {
    /// The inferred facts: type name (`Linear`, `Embedding`, `Router`, `ModuleList`, `Module`),
    /// role and flags.
    #[must_use]
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// The submodules, in order: indices numerically, then names.
    #[cfg(feature = "candle")]
    pub(crate) fn children(&self) -> &[(ChildKey, CheckpointModule)] {
        &self.children
    }

    /// The names of the parameters the module owns (`weight`, `bias`).
    pub fn parameter_names(&self) -> impl Iterator<Item = &str> {
        self.parameters.iter().map(|(name, _)| name.as_str())
    }

    pub(super) fn describe_parameters(&self, tensors: &[TensorInfo]) -> String {
        let parts: Vec<String> = self
            .parameters
            .iter()
            .map(|(name, position)| {
                let tensor = &tensors[*position];
                let shape: Vec<String> = tensor.shape.iter().map(u64::to_string).collect();
                format!("{name}: {}[{}]", tensor.dtype, shape.join(", "))
            })
            .collect();
        parts.join(", ")
    }
}

/// A child's segment: an index (`0`) or a name; indices sort numerically, before names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ChildKey {
    Index(usize),
    Name(String),
}

impl ChildKey {
    fn of(segment: String) -> ChildKey {
        match segment.parse() {
            Ok(index) if is_index(&segment) => ChildKey::Index(index),
            _ => ChildKey::Name(segment),
        }
    }
}

/// A module while the tree is being built: children by segment text, sorted when finished.
#[derive(Default)]
pub(super) struct Draft {
    pub(super) parameters: Vec<(String, usize)>,
    children: HashMap<String, Draft>,
}

impl Draft {
    pub(super) fn child(&mut self, segment: &str) -> &mut Draft {
        // Look up before inserting: most segments repeat, and a lookup allocates nothing.
        if !self.children.contains_key(segment) {
            self.children.insert(segment.to_owned(), Draft::default());
        }
        self.children
            .get_mut(segment)
            .unwrap_or_else(|| unreachable!())
    }

    pub(super) fn finish(
        self,
        name: Option<&str>,
        parent_has_experts: bool,
        in_experts: bool,
        tensors: &[TensorInfo],
    ) -> CheckpointModule {
        let is_experts = name == Some("experts");
        let has_experts = self.children.contains_key("experts");
        let mut sorted: Vec<(ChildKey, Draft)> = self
            .children
            .into_iter()
            .map(|(segment, child)| (ChildKey::of(segment), child))
            .collect();
        sorted.sort_unstable_by(|left, right| left.0.cmp(&right.0));
        let weight_2d = self.parameters.iter().any(|(parameter, position)| {
            parameter == "weight" && tensors[*position].shape.len() == 2
        });
        let mut info = if sorted.is_empty() && weight_2d {
            let name = name.unwrap_or_default();
            if name.contains("embed") {
                NodeInfo::layer("Embedding", Kind::Embedding)
            } else if matches!(name, "gate" | "router") && parent_has_experts {
                NodeInfo::layer("Router", Kind::Router)
            } else if name == "lm_head" {
                NodeInfo::layer("Linear", Kind::Linear).head()
            } else {
                NodeInfo::layer("Linear", Kind::Linear)
            }
        } else if name.is_none() {
            NodeInfo::module("Checkpoint")
        } else if !sorted.is_empty()
            && self.parameters.is_empty()
            && sorted
                .iter()
                .all(|(key, _)| matches!(key, ChildKey::Index(_)))
        {
            NodeInfo::container("ModuleList")
        } else {
            NodeInfo::module("Module")
        };
        if is_experts && !in_experts {
            info = info.expert();
        }
        // A checkpoint has no types: a module named like the shared experts of Qwen2-MoE
        // (`shared_expert`) and DeepSeek (`shared_experts`) beside routed ones is a shared expert.
        if matches!(name, Some("shared_expert" | "shared_experts")) && parent_has_experts {
            info = info.shared_expert();
        }
        let children = sorted
            .into_iter()
            .map(|(key, child)| {
                let child_name = match &key {
                    ChildKey::Name(name) => Some(name.as_str()),
                    ChildKey::Index(_) => name,
                };
                let module =
                    child.finish(child_name, has_experts, in_experts || is_experts, tensors);
                (key, module)
            })
            .collect();
        CheckpointModule {
            info,
            parameters: self.parameters,
            children,
        }
    }
}

impl ModuleTree for CheckpointModule {
    /// A checkpoint's tree is known only at run time.
    const SCHEMA: Schema = Schema::NONE;

    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        match self.info.role {
            Role::Layer(_) => walker.layer(&self.info, self),
            Role::Container => {
                let scope = walker.enter_container(&self.info);
                walk_children(&self.children, walker);
                walker.exit_container(scope);
            }
            Role::Module => {
                let scope = walker.enter_module(&self.info, self);
                walk_children(&self.children, walker);
                walker.exit_module(scope);
            }
        }
    }

    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        let info = self.info;
        match info.role {
            Role::Layer(_) => walker.layer(&info, self),
            Role::Container => {
                let scope = walker.enter_container(&info);
                walk_children_mut(&mut self.children, walker);
                walker.exit_container(scope);
            }
            Role::Module => {
                let scope = walker.enter_module(&info, self);
                walk_children_mut(&mut self.children, walker);
                walker.exit_module(scope);
            }
        }
    }

    fn as_any(&self) -> Option<&dyn core::any::Any> {
        Some(self)
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn core::any::Any> {
        Some(self)
    }
}

fn walk_children<'a>(children: &'a [(ChildKey, CheckpointModule)], walker: &mut Walker<'a, '_>) {
    for (key, child) in children {
        match key {
            ChildKey::Index(index) => walker.element(*index, child),
            ChildKey::Name(name) => walker.entry(name, child),
        }
    }
}

fn walk_children_mut<'a>(
    children: &'a mut [(ChildKey, CheckpointModule)],
    walker: &mut WalkerMut<'a, '_>,
) {
    for (key, child) in children {
        match key {
            ChildKey::Index(index) => walker.element(*index, child),
            ChildKey::Name(name) => walker.entry(name, child),
        }
    }
}

impl ModuleTree for Checkpoint {
    /// A checkpoint's tree is known only at run time.
    const SCHEMA: Schema = Schema::NONE;

    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        self.root.walk(walker);
    }

    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        self.root.walk_mut(walker);
    }
}
