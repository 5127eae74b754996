//! [`ModuleTree`] for candle's types: tensors are parameters, candle-nn layers are leaves.
//!
//! A tensor or a `Var` adds no node (it is a parameter, like `nn.Parameter` in PyTorch's
//! `named_modules`). Each candle-nn layer is a leaf of its kind that downcasts to itself, so a
//! mutable walk can rebuild it (`NodeMut::downcast_mut::<candle_nn::Linear>()`). The
//! [`delegate_layer!`](crate::delegate_layer) macro makes a wrapper of the user's a leaf that
//! downcasts to its inner layer, so that merging and loading reach through it.

use candle_core::{Tensor, Var};
use candle_nn::{Conv1d, Conv2d, Embedding, LayerNorm, Linear, RmsNorm};

use crate::kind::Kind;
use crate::schema::Schema;
use crate::tree::ModuleTree;
use crate::walk::{Walker, WalkerMut};

macro_rules! parameter {
    ($($ty:ty),*) => {$(
        /// A parameter, not a module: it adds no node.
        impl ModuleTree for $ty {
            const SCHEMA: Schema = Schema::NONE;

            fn walk<'a>(&'a self, _: &mut Walker<'a, '_>) {}

            fn walk_mut<'a>(&'a mut self, _: &mut WalkerMut<'a, '_>) {}
        }
    )*};
}

parameter!(Tensor, Var);

crate::impls::leaf_layers! {
    Linear => Kind::Linear;
    Embedding => Kind::Embedding;
    Conv1d => Kind::Conv;
    Conv2d => Kind::Conv;
    LayerNorm => Kind::Norm;
    RmsNorm => Kind::Norm;
}

/// Makes a wrapper type a leaf layer that delegates to one of its fields.
///
/// The wrapper reports one leaf of the given kind under its own type name, and downcasts (and
/// holds its expert flag) through the inner field, so that
/// [`load_peft_adapter`](crate::candle::load_peft_adapter) and [`apply_lora`](crate::candle::apply_lora)
/// reach the inner `candle_nn::Linear` or [`LoraLinear`](crate::candle::LoraLinear). The inner
/// field's type must implement [`ModuleTree`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use moduletree::candle::LoraLinear;
///
/// /// A linear layer with a tracing span, as candle-transformers writes them.
/// struct TracedLinear {
///     inner: LoraLinear,
///     span: &'static str,
/// }
///
/// moduletree::delegate_layer!(TracedLinear => inner, moduletree::Kind::Linear);
///
/// #[derive(moduletree::ModuleTree)]
/// struct Block {
///     proj: TracedLinear,
/// }
///
/// let weight = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
/// let inner = LoraLinear::new(candle_nn::Linear::new(weight, None));
/// let mut block = Block { proj: TracedLinear { inner, span: "proj" } };
/// assert_eq!(moduletree::find_all_linear_modules(&block), ["proj"]);
/// assert_eq!(moduletree::set_linear_is_expert(&mut block), Vec::<String>::new());
/// ```
#[macro_export]
macro_rules! delegate_layer {
    ($ty:ty => $field:tt, $kind:expr) => {
        impl $crate::ModuleTree for $ty {
            const SCHEMA: $crate::Schema =
                $crate::Schema::layer($crate::NodeInfo::layer(stringify!($ty), $kind));

            fn walk<'a>(&'a self, walker: &mut $crate::Walker<'a, '_>) {
                walker.layer(&$crate::NodeInfo::layer(stringify!($ty), $kind), self);
            }

            fn walk_mut<'a>(&'a mut self, walker: &mut $crate::WalkerMut<'a, '_>) {
                walker.layer(&$crate::NodeInfo::layer(stringify!($ty), $kind), self);
            }

            fn as_any(&self) -> ::core::option::Option<&dyn ::core::any::Any> {
                $crate::ModuleTree::as_any(&self.$field)
            }

            fn as_any_mut(&mut self) -> ::core::option::Option<&mut dyn ::core::any::Any> {
                $crate::ModuleTree::as_any_mut(&mut self.$field)
            }

            fn expert_flag_mut(&mut self) -> ::core::option::Option<&mut bool> {
                $crate::ModuleTree::expert_flag_mut(&mut self.$field)
            }
        }
    };
}
