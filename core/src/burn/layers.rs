//! [`ModuleTree`] for burn's parameters and burn-nn's layers.
//!
//! Parameters and tensors (`Param`, `Tensor`, `RunningState`) are not modules: they add
//! no node, so a field that holds one needs no mark. burn-nn's layers are leaves of their kind —
//! `Linear` (linear), `Embedding` (embedding), the convolutions (conv), the norms (norm) — and
//! offer downcasting, so a mutable walk can reach `burn::nn::Linear` itself.
//! `MultiHeadAttention` and `SwiGlu` are modules whose children are their linears (`query`,
//! `key`, `value`, `output`; `linear_inner`, `linear_outer`), named as burn's record names them.
//! Layers without weights that matter for targeting (dropout, activations) are plain module nodes
//! with no children, as in PyTorch's `named_modules`.

use core::any::Any;

use burn::module::{Param, ParameterValue, RunningState};
use burn::nn::attention::MultiHeadAttention;
use burn::nn::conv::{Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d};
use burn::nn::{
    BatchNorm, Celu, Dropout, Elu, Embedding, GLU, Gelu, GroupNorm, HardSigmoid, Identity,
    InstanceNorm, LayerNorm, LeakyRelu, Linear, PRelu, PositionalEncoding, Relu, RmsNorm,
    RotaryEncoding, Selu, Sigmoid, Softplus, Softsign, SwiGlu, Tanh,
};
use burn::tensor::Tensor;
use burn::tensor::kind::Basic;

use crate::kind::Kind;
use crate::schema::{FieldSchema, Schema, Shape};
use crate::tree::{Field, ModuleTree, NodeInfo};
use crate::walk::{Walker, WalkerMut};

impl<T: ParameterValue> ModuleTree for Param<T> {
    const SCHEMA: Schema = Schema::NONE;

    fn walk<'a>(&'a self, _: &mut Walker<'a, '_>) {}

    fn walk_mut<'a>(&'a mut self, _: &mut WalkerMut<'a, '_>) {}
}

impl<const D: usize, K: Basic> ModuleTree for Tensor<D, K> {
    const SCHEMA: Schema = Schema::NONE;

    fn walk<'a>(&'a self, _: &mut Walker<'a, '_>) {}

    fn walk_mut<'a>(&'a mut self, _: &mut WalkerMut<'a, '_>) {}
}

impl<V> ModuleTree for RunningState<V> {
    const SCHEMA: Schema = Schema::NONE;

    fn walk<'a>(&'a self, _: &mut Walker<'a, '_>) {}

    fn walk_mut<'a>(&'a mut self, _: &mut WalkerMut<'a, '_>) {}
}

crate::impls::leaf_layers! {
    Linear => Kind::Linear;
    Embedding => Kind::Embedding;
    Conv1d => Kind::Conv;
    Conv2d => Kind::Conv;
    Conv3d => Kind::Conv;
    ConvTranspose1d => Kind::Conv;
    ConvTranspose2d => Kind::Conv;
    ConvTranspose3d => Kind::Conv;
    LayerNorm => Kind::Norm;
    RmsNorm => Kind::Norm;
    GroupNorm => Kind::Norm;
    InstanceNorm => Kind::Norm;
    BatchNorm => Kind::Norm;
}

/// Modules whose children are named `Linear` fields; with none, a node of their own and nothing
/// below it (dropout, activations).
macro_rules! with_linears {
    ($($ty:ident { $($field:ident),* }),* $(,)?) => {$(
        impl ModuleTree for $ty {
            const SCHEMA: Schema = Schema::node(
                NodeInfo::module(stringify!($ty)),
                Shape::Fields(&[$(FieldSchema {
                    field: Field::named(&[stringify!($field)]),
                    schema: &<Linear as ModuleTree>::SCHEMA,
                }),*]),
            );

            fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
                let scope = walker.enter_module(&const { NodeInfo::module(stringify!($ty)) }, self);
                $(walker.field(&const { Field::named(&[stringify!($field)]) }, &self.$field);)*
                walker.exit_module(scope);
            }

            fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
                let scope = walker.enter_module(&const { NodeInfo::module(stringify!($ty)) }, self);
                $(walker.field(&const { Field::named(&[stringify!($field)]) }, &mut self.$field);)*
                walker.exit_module(scope);
            }

            fn as_any(&self) -> Option<&dyn Any> {
                Some(self)
            }

            fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
                Some(self)
            }
        }
    )*};
}

with_linears! {
    MultiHeadAttention { query, key, value, output },
    SwiGlu { linear_inner, linear_outer },
    Dropout {}, Identity {}, Gelu {}, Relu {}, Sigmoid {}, Tanh {}, Selu {}, Celu {}, Elu {},
    LeakyRelu {}, PRelu {}, HardSigmoid {}, Softplus {}, Softsign {}, GLU {},
    PositionalEncoding {}, RotaryEncoding {},
}
