//! The module tree of a checkpoint with candle layers at its leaves, so that adapters load into a
//! checkpoint by the rules they load into a derived model by.

use std::collections::HashMap;

use candle_core::Tensor;
use candle_nn::{Embedding, Linear};

use crate::candle::bank::ExpertBank;
use crate::checkpoint::{Checkpoint, CheckpointModule, ChildKey};
use crate::kind::Kind;
use crate::peft::PeftError;
use crate::schema::Schema;
use crate::tree::{ModuleTree, NodeInfo, Role};
use crate::walk::{Walker, WalkerMut};

/// What a leaf holds.
#[derive(Debug)]
enum Leaf {
    /// A module or container.
    None,
    Linear(Linear),
    Embedding(Embedding),
    Bank(ExpertBank),
}

/// A module of the tree: its facts, its candle layer when it is a leaf, and its submodules.
#[derive(Debug)]
pub(crate) struct WeightsModule {
    info: NodeInfo,
    leaf: Leaf,
    children: Vec<(ChildKey, WeightsModule)>,
}

impl WeightsModule {
    /// The tree of `checkpoint`, its layers holding the tensors of `tensors` (by name).
    pub(crate) fn build(
        checkpoint: &Checkpoint,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<WeightsModule, PeftError> {
        let mut path = String::new();
        convert(checkpoint.root(), checkpoint, tensors, &mut path)
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// `module` with candle layers, built depth first like the checkpoint's own tree.
fn convert(
    module: &CheckpointModule,
    checkpoint: &Checkpoint,
    tensors: &HashMap<String, Tensor>,
    path: &mut String,
) -> Result<WeightsModule, PeftError> {
    let missing = |name: &str| PeftError::Checkpoint {
        path: checkpoint.files().first().cloned().unwrap_or_default(),
        message: format!("the tensor `{name}` is listed but was not read"),
    };
    let leaf = match module.info().role {
        // transformers 5 keeps routed experts fused: the checkpoint's tree has a bank at each
        // 3-D parameter's path (`experts.gate_up_proj [E, 2I, H]`), or at a module owning a
        // 3-D `weight` (GraniteMoE's `input_linear`).
        Role::Layer(Kind::GroupedLinear) => {
            let name = [path.clone(), join(path, "weight")]
                .into_iter()
                .find(|name| tensors.contains_key(name))
                .unwrap_or_else(|| path.clone());
            let tensor = tensors.get(&name).ok_or_else(|| missing(&name))?;
            // GPT-OSS and Aria store their banks `[E, in, out]`, as their config says.
            let bank = if crate::peft::checkpoint::experts_transposed(checkpoint) {
                ExpertBank::transposed(tensor.clone())
            } else {
                ExpertBank::new(tensor.clone())
            };
            let bank = bank.map_err(|error| PeftError::Tensor {
                path: name.clone(),
                message: error.to_string(),
            })?;
            Leaf::Bank(bank)
        }
        Role::Layer(kind) => {
            let name = join(path, "weight");
            let weight = tensors.get(&name).ok_or_else(|| missing(&name))?.clone();
            if kind == Kind::Embedding {
                let hidden = weight.dims().get(1).copied().unwrap_or(0);
                Leaf::Embedding(Embedding::new(weight, hidden))
            } else {
                let bias = tensors.get(&join(path, "bias")).cloned();
                Leaf::Linear(Linear::new(weight, bias))
            }
        }
        Role::Module | Role::Container => Leaf::None,
    };
    let mut children = Vec::with_capacity(module.children().len());
    for (key, child) in module.children() {
        let length = path.len();
        let segment = match key {
            ChildKey::Index(index) => index.to_string(),
            ChildKey::Name(name) => name.to_string(),
        };
        *path = join(path, &segment);
        let converted = convert(child, checkpoint, tensors, path);
        path.truncate(length);
        children.push((key.clone(), converted?));
    }
    Ok(WeightsModule {
        info: *module.info(),
        leaf,
        children,
    })
}

impl ModuleTree for WeightsModule {
    /// A checkpoint's tree is known only at run time.
    const SCHEMA: Schema = Schema::NONE;

    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        match (&self.leaf, self.info.role) {
            (Leaf::Linear(linear), _) => walker.layer(&self.info, linear),
            (Leaf::Embedding(embedding), _) => walker.layer(&self.info, embedding),
            (Leaf::Bank(bank), _) => walker.layer(&self.info, bank),
            (Leaf::None, Role::Layer(_)) => walker.layer(&self.info, self),
            (Leaf::None, Role::Container) => {
                let scope = walker.enter_container(&self.info);
                for (key, child) in &self.children {
                    match key {
                        ChildKey::Index(index) => walker.element(*index, child),
                        ChildKey::Name(name) => walker.entry(name, child),
                    }
                }
                walker.exit_container(scope);
            }
            (Leaf::None, Role::Module) => {
                let scope = walker.enter_module(&self.info, self);
                for (key, child) in &self.children {
                    match key {
                        ChildKey::Index(index) => walker.element(*index, child),
                        ChildKey::Name(name) => walker.entry(name, child),
                    }
                }
                walker.exit_module(scope);
            }
        }
    }

    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        let info = self.info;
        match &mut self.leaf {
            Leaf::Linear(linear) => return walker.layer(&info, linear),
            Leaf::Embedding(embedding) => return walker.layer(&info, embedding),
            Leaf::Bank(bank) => return walker.layer(&info, bank),
            Leaf::None => {}
        }
        let scope = match info.role {
            Role::Layer(_) => return walker.layer(&info, &mut Opaque),
            Role::Container => walker.enter_container(&info),
            Role::Module => walker.enter_module(&info, &mut Opaque),
        };
        for (key, child) in &mut self.children {
            match key {
                ChildKey::Index(index) => walker.element(*index, child),
                ChildKey::Name(name) => walker.entry(name, child),
            }
        }
        if info.role == Role::Container {
            walker.exit_container(scope);
        } else {
            walker.exit_module(scope);
        }
    }
}

/// What a module node of the mutable walk reports: the modules themselves are never changed.
struct Opaque;

impl ModuleTree for Opaque {
    const SCHEMA: Schema = Schema::NONE;

    fn walk<'a>(&'a self, _: &mut Walker<'a, '_>) {}

    fn walk_mut<'a>(&'a mut self, _: &mut WalkerMut<'a, '_>) {}
}
