//! Trait objects in the tree: [`DynModuleTree`], the object-safe side of [`ModuleTree`], and
//! [`dyn_module_tree!`](crate::dyn_module_tree), which lets `Box<dyn Block>` be walked.
//!
//! `ModuleTree` has an associated constant (the static schema), so `dyn ModuleTree` is not a type.
//! Model code that keeps its blocks as `Vec<Box<dyn Block>>` makes `DynModuleTree` a supertrait of
//! its own trait and implements `ModuleTree` for `dyn Block` with the macro: each block is then
//! walked as its concrete type. A type's schema cannot see through a trait object: it shows the
//! block as an opaque module named after the trait.
//!
//! ```
//! use moduletree::ModuleTree;
//!
//! trait Block: moduletree::DynModuleTree {
//!     fn width(&self) -> usize;
//! }
//! moduletree::dyn_module_tree!(dyn Block);
//!
//! #[derive(ModuleTree)]
//! struct Dense {
//!     #[layer(kind = "linear")]
//!     proj: (),
//! }
//! impl Block for Dense {
//!     fn width(&self) -> usize { 1 }
//! }
//!
//! #[derive(ModuleTree)]
//! struct Model {
//!     layers: Vec<Box<dyn Block>>,
//! }
//!
//! let model = Model { layers: vec![Box::new(Dense { proj: () }), Box::new(Dense { proj: () })] };
//! assert_eq!(moduletree::find_all_linear_modules(&model), ["proj"]);
//! let paths: Vec<String> = moduletree::named_modules(&model).into_iter().map(|m| m.path().to_owned()).collect();
//! assert_eq!(paths, ["", "layers", "layers.0", "layers.0.proj", "layers.1", "layers.1.proj"]);
//! ```

use crate::tree::ModuleTree;
use crate::walk::{Walker, WalkerMut};

/// The object-safe side of [`ModuleTree`], implemented for every `ModuleTree` type: make it a
/// supertrait of a trait whose objects hold modules, then
/// [`dyn_module_tree!`](crate::dyn_module_tree) makes the objects walkable.
pub trait DynModuleTree {
    /// [`ModuleTree::walk`] through a trait object.
    fn walk_dyn<'a>(&'a self, walker: &mut Walker<'a, '_>);

    /// [`ModuleTree::walk_mut`] through a trait object.
    fn walk_mut_dyn<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>);
}

impl<T: ModuleTree> DynModuleTree for T {
    fn walk_dyn<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        self.walk(walker);
    }

    fn walk_mut_dyn<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        self.walk_mut(walker);
    }
}

/// Implements [`ModuleTree`] for a trait object type whose trait has
/// [`DynModuleTree`](crate::DynModuleTree) as a supertrait: `dyn_module_tree!(dyn Block)`, or
/// `dyn_module_tree!(dyn Block + Send + Sync)`. `Box`, `Arc` and `&` of it are then walked as the
/// concrete type inside; see the [module docs](crate::dynamic) for an example.
#[macro_export]
macro_rules! dyn_module_tree {
    ($object:ty) => {
        impl $crate::ModuleTree for $object {
            /// A trait object's contents are known only at run time: an opaque module.
            const SCHEMA: $crate::Schema = $crate::Schema::node(
                $crate::NodeInfo::module(::core::stringify!($object)),
                $crate::__private::Shape::Leaf,
            );

            fn walk<'a>(&'a self, walker: &mut $crate::Walker<'a, '_>) {
                $crate::DynModuleTree::walk_dyn(self, walker);
            }

            fn walk_mut<'a>(&'a mut self, walker: &mut $crate::WalkerMut<'a, '_>) {
                $crate::DynModuleTree::walk_mut_dyn(self, walker);
            }
        }
    };
}
