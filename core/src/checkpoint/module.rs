//! A checkpoint's modules as a [`ModuleTree`]: the tree tensor names make, with kinds inferred
//! by the [rule table](crate::checkpoint::rules).

use crate::checkpoint::rules::{Quantization, Rule};
use crate::checkpoint::{Checkpoint, CheckpointTensor};
use crate::schema::Schema;
use crate::tree::{ModuleTree, NodeInfo, Role};
use crate::walk::{Walker, WalkerMut};

/// A module of a [`Checkpoint`]: the parameters it owns and its submodules.
#[derive(Clone, Debug)]
pub struct CheckpointModule {
    pub(super) info: NodeInfo,
    pub(super) rule: Option<Rule>,
    pub(super) quantization: Option<Quantization>,
    /// Parameter names and their positions in the checkpoint's tensors.
    pub(super) parameters: Vec<(Name, u32)>,
    pub(super) children: Vec<(ChildKey, CheckpointModule)>,
}

impl CheckpointModule {
    pub(super) fn empty_root() -> CheckpointModule {
        CheckpointModule {
            info: NodeInfo::module("Checkpoint"),
            rule: None,
            quantization: None,
            parameters: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The inferred facts: type name (`Linear`, `Linear4bit`, `GroupedLinear`, `Embedding`,
    /// `Router`, `Norm`, `Conv2d`, `ModuleList`, `Module`, …), role and flags.
    #[must_use]
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// The row of the [rule table](crate::checkpoint::rules) that made this module a layer.
    #[must_use]
    pub fn rule(&self) -> Option<Rule> {
        self.rule
    }

    /// The quantized layout of a layer, recognised by the tensors beside its weight.
    #[must_use]
    pub fn quantization(&self) -> Option<Quantization> {
        self.quantization
    }

    /// The submodules, in order: indices numerically, then names.
    pub(crate) fn children(&self) -> &[(ChildKey, CheckpointModule)] {
        &self.children
    }

    /// The submodule under `segment`.
    #[must_use]
    pub fn child(&self, segment: &str) -> Option<&CheckpointModule> {
        self.children
            .iter()
            .find(|(key, _)| key.as_segment() == segment)
            .map(|(_, child)| child)
    }

    /// The names of the tensors the module owns, relative to it (`weight`, `bias`,
    /// `weight.absmax`); a fused expert bank owns the tensor named like itself.
    pub fn parameter_names(&self) -> impl Iterator<Item = &str> {
        self.parameters.iter().map(|(name, _)| &**name)
    }

    /// The positions in [`Checkpoint::tensors`] of the tensors the module owns.
    pub fn parameter_positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.parameters
            .iter()
            .map(|(_, position)| *position as usize)
    }

    /// `weight: BF16[4096, 4096], bias: ?` (`?` when the shard was absent); a quantized layer
    /// shows its layout and its weight, and counts its companion tensors.
    pub(super) fn describe_parameters(&self, tensors: &[CheckpointTensor]) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(quantization) = self.quantization {
            parts.push(quantization.name().to_owned());
        }
        let mut companions = 0;
        for (name, position) in &self.parameters {
            if self.quantization.is_some() && Quantization::is_companion(name) {
                companions += 1;
                continue;
            }
            let described = tensors
                .get(*position as usize)
                .map_or_else(|| "?".to_owned(), CheckpointTensor::describe);
            parts.push(format!("{name}: {described}"));
        }
        if companions > 0 {
            parts.push(format!("+{companions} quantization tensors"));
        }
        parts.join(", ")
    }
}

/// A segment or parameter name, shared by every module that has it.
pub(crate) type Name = std::sync::Arc<str>;

/// A child's segment: an index (`0`) or a name; indices sort numerically, before names.
///
/// An index is written in canonical decimal: `01` is a name, so `layers.01` and `layers.1` stay
/// two paths; a number past `usize` is a name too.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ChildKey {
    Index(usize),
    Name(Name),
}

impl ChildKey {
    /// The index a segment writes, if it writes one canonically.
    pub(super) fn index(segment: &str) -> Option<usize> {
        let canonical = segment == "0"
            || segment.starts_with(|c: char| c.is_ascii_digit() && c != '0')
                && segment.bytes().all(|byte| byte.is_ascii_digit());
        canonical.then(|| segment.parse().ok()).flatten()
    }

    fn as_segment(&self) -> std::borrow::Cow<'_, str> {
        match self {
            ChildKey::Index(index) => index.to_string().into(),
            ChildKey::Name(name) => (**name).into(),
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
