//! [`ModuleTree`] for the standard library: containers, wrappers, and values that are not modules.
//!
//! `Vec<T>`, `[T; N]` and tuples are container nodes whose elements sit under index segments,
//! like PyTorch's `nn.ModuleList`; `BTreeMap<String, T>` and `HashMap<String, T>` are container
//! nodes whose values sit under key segments, walked in key order. `Option<T>`, `Box<T>`, `Arc<T>`
//! `Rc<T>` and `&T` add nothing: their content sits at their own path (`Arc`, `Rc` and `&T`
//! read-only).
//! Numbers, `bool`, `char`, strings, `()` and `PhantomData` are not modules and add no node.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::schema::{Schema, Shape};
use crate::tree::{ModuleTree, NodeInfo};
use crate::walk::{Walker, WalkerMut};

macro_rules! not_a_module {
    ($($ty:ty),* $(,)?) => {$(
        impl ModuleTree for $ty {
            const SCHEMA: Schema = Schema::NONE;

            fn walk<'a>(&'a self, _: &mut Walker<'a, '_>) {}

            fn walk_mut<'a>(&'a mut self, _: &mut WalkerMut<'a, '_>) {}
        }
    )*};
}

/// Implements [`ModuleTree`] for layer types of the integrations (`Type => Kind::…`): each is a
/// leaf of its kind, named by its type, that downcasts to itself so a mutable walk can reach it.
/// `Type => Kind::…, expert_flag = field` also hands out that `bool` field as its run-time
/// expert flag.
#[cfg(any(feature = "candle", feature = "burn"))]
macro_rules! leaf_layers {
    ($($ty:ident => $kind:expr $(, expert_flag = $flag:ident)?);* $(;)?) => {$(
        #[doc = concat!("`", stringify!($ty), "` is a leaf layer of kind `", stringify!($kind), "`.")]
        impl $crate::ModuleTree for $ty {
            const SCHEMA: $crate::Schema =
                $crate::Schema::layer($crate::NodeInfo::layer(stringify!($ty), $kind));

            fn walk<'a>(&'a self, walker: &mut $crate::Walker<'a, '_>) {
                walker.layer(&const { $crate::NodeInfo::layer(stringify!($ty), $kind) }, self);
            }

            fn walk_mut<'a>(&'a mut self, walker: &mut $crate::WalkerMut<'a, '_>) {
                walker.layer(&const { $crate::NodeInfo::layer(stringify!($ty), $kind) }, self);
            }

            fn as_any(&self) -> Option<&dyn ::core::any::Any> {
                Some(self)
            }

            fn as_any_mut(&mut self) -> Option<&mut dyn ::core::any::Any> {
                Some(self)
            }

            $(
                fn expert_flag_mut(&mut self) -> Option<&mut bool> {
                    Some(&mut self.$flag)
                }
            )?
        }
    )*};
}

#[cfg(any(feature = "candle", feature = "burn"))]
pub(crate) use leaf_layers;

not_a_module!(
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    (),
    String,
    str,
);

impl<T: ?Sized> ModuleTree for PhantomData<T> {
    const SCHEMA: Schema = Schema::NONE;

    fn walk<'a>(&'a self, _: &mut Walker<'a, '_>) {}

    fn walk_mut<'a>(&'a mut self, _: &mut WalkerMut<'a, '_>) {}
}

impl<T: ModuleTree> ModuleTree for Option<T> {
    const SCHEMA: Schema = Schema::transparent(T::SCHEMA_REF);

    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        if let Some(inner) = self {
            inner.walk(walker);
        }
    }

    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        if let Some(inner) = self {
            inner.walk_mut(walker);
        }
    }
}

impl<T: ModuleTree + ?Sized> ModuleTree for Box<T> {
    const SCHEMA: Schema = Schema::transparent(T::SCHEMA_REF);

    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        T::walk(self, walker);
    }

    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        T::walk_mut(self, walker);
    }
}

macro_rules! shared_pointer {
    ($($pointer:ident),*) => {$(
        impl<T: ModuleTree + ?Sized> ModuleTree for $pointer<T> {
            const SCHEMA: Schema = Schema::transparent(T::SCHEMA_REF);

            fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
                T::walk(self, walker);
            }

            fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
                let shared: &'a Self = self;
                walker.shared::<T>(shared);
            }
        }
    )*};
}

shared_pointer!(Arc, Rc);

impl<T: ModuleTree + ?Sized> ModuleTree for &T {
    const SCHEMA: Schema = Schema::transparent(T::SCHEMA_REF);

    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        T::walk(self, walker);
    }

    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        let shared: &'a T = self;
        walker.shared::<T>(shared);
    }
}

const VEC: NodeInfo = NodeInfo::container("Vec");
const ARRAY: NodeInfo = NodeInfo::container("array");
const TUPLE: NodeInfo = NodeInfo::container("tuple");
const BTREE_MAP: NodeInfo = NodeInfo::container("BTreeMap");
const HASH_MAP: NodeInfo = NodeInfo::container("HashMap");

impl<T: ModuleTree> ModuleTree for Vec<T> {
    const SCHEMA: Schema = Schema::node(
        VEC,
        Shape::Sequence {
            element: T::SCHEMA_REF,
            len: None,
        },
    );

    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        walk_elements(walker, &VEC, self);
    }

    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        walk_elements_mut(walker, &VEC, self);
    }
}

impl<T: ModuleTree, const N: usize> ModuleTree for [T; N] {
    const SCHEMA: Schema = Schema::node(
        ARRAY,
        Shape::Sequence {
            element: T::SCHEMA_REF,
            len: Some(N),
        },
    );

    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        walk_elements(walker, &ARRAY, self);
    }

    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        walk_elements_mut(walker, &ARRAY, self);
    }
}

/// A `Vec` or array: a container node, then each element under its index.
fn walk_elements<'a, T: ModuleTree>(
    walker: &mut Walker<'a, '_>,
    info: &NodeInfo,
    elements: &'a [T],
) {
    let scope = walker.enter_container(info);
    for (index, element) in elements.iter().enumerate() {
        walker.element(index, element);
    }
    walker.exit_container(scope);
}

/// [`walk_elements`] with mutable access.
fn walk_elements_mut<'a, T: ModuleTree>(
    walker: &mut WalkerMut<'a, '_>,
    info: &NodeInfo,
    elements: &'a mut [T],
) {
    let scope = walker.enter_container(info);
    for (index, element) in elements.iter_mut().enumerate() {
        walker.element(index, element);
    }
    walker.exit_container(scope);
}

/// Whether any of `schemas` holds a module: a node, or a wrapper or tuple around one.
const fn any_modules(schemas: &[&Schema]) -> bool {
    let mut at = 0;
    while at < schemas.len() {
        if holds_modules(schemas[at]) {
            return true;
        }
        at += 1;
    }
    false
}

const fn holds_modules(schema: &Schema) -> bool {
    if schema.info.is_some() {
        return true;
    }
    match schema.shape {
        Shape::Transparent(inner) => holds_modules(inner),
        Shape::Tuple(elements) => any_modules(elements),
        // A derived wrapper without a node of its own (its fields all flattened).
        Shape::Fields(_) | Shape::Variants(_) => true,
        Shape::Leaf | Shape::Sequence { .. } | Shape::Map(_) => false,
    }
}

macro_rules! tuple {
    ($(($($index:tt $name:ident),+))*) => {$(
        impl<$($name: ModuleTree),+> ModuleTree for ($($name,)+) {
            const SCHEMA: Schema = {
                let elements: &[&Schema] = &[$($name::SCHEMA_REF),+];
                if any_modules(elements) {
                    Schema::node(TUPLE, Shape::Tuple(&[$($name::SCHEMA_REF),+]))
                } else {
                    Schema::NONE
                }
            };

            fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
                // A tuple of values that are not modules (a key-value cache of tensors) is none.
                if Self::SCHEMA.info.is_none() {
                    return;
                }
                let scope = walker.enter_container(&TUPLE);
                $(walker.element($index, &self.$index);)+
                walker.exit_container(scope);
            }

            fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
                if Self::SCHEMA.info.is_none() {
                    return;
                }
                let scope = walker.enter_container(&TUPLE);
                $(walker.element($index, &mut self.$index);)+
                walker.exit_container(scope);
            }
        }
    )*};
}

tuple! {
    (0 A)
    (0 A, 1 B)
    (0 A, 1 B, 2 C)
    (0 A, 1 B, 2 C, 3 D)
    (0 A, 1 B, 2 C, 3 D, 4 E)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H)
}

impl<T: ModuleTree> ModuleTree for BTreeMap<String, T> {
    const SCHEMA: Schema = Schema::node(BTREE_MAP, Shape::Map(T::SCHEMA_REF));

    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        let scope = walker.enter_container(&BTREE_MAP);
        for (key, value) in self {
            walker.entry(key, value);
        }
        walker.exit_container(scope);
    }

    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        let scope = walker.enter_container(&BTREE_MAP);
        for (key, value) in self {
            walker.entry(key, value);
        }
        walker.exit_container(scope);
    }
}

/// A `HashMap` is walked in key order, like a `BTreeMap`: the walk sorts its entries, which costs
/// one allocation per map (not per node).
impl<T: ModuleTree, S> ModuleTree for HashMap<String, T, S> {
    const SCHEMA: Schema = Schema::node(HASH_MAP, Shape::Map(T::SCHEMA_REF));

    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        let scope = walker.enter_container(&HASH_MAP);
        let mut entries: Vec<_> = self.iter().collect();
        entries.sort_unstable_by(|left, right| left.0.cmp(right.0));
        for (key, value) in entries {
            walker.entry(key, value);
        }
        walker.exit_container(scope);
    }

    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        let scope = walker.enter_container(&HASH_MAP);
        let mut entries: Vec<_> = self.iter_mut().collect();
        entries.sort_unstable_by(|left, right| left.0.cmp(right.0));
        for (key, value) in entries {
            walker.entry(key, value);
        }
        walker.exit_container(scope);
    }
}
