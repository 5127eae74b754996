//! Generic types under `deny(warnings)`: the derive bounds exactly the type parameters that walked
//! fields use, never one used only by a skipped field, a `PhantomData` or a `#[layer]` field, and
//! `#[tree(bound = "...")]` replaces what it infers.
//!
//! Every type parameter that must stay unbounded is instantiated below with [`NotAModule`], which
//! does not implement `ModuleTree`: a wrongly inferred bound fails this file's compilation.

#![deny(warnings)]

use std::marker::PhantomData;

use moduletree::{Kind, ModuleTree, named_modules};

/// A type that is not a module tree.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct NotAModule;

#[derive(ModuleTree, Clone, Debug, PartialEq)]
#[layer(kind = "linear")]
struct Linear {
    width: usize,
}

const LINEAR: Linear = Linear { width: 4 };

/// Path, type name and kind of every node of `model`.
fn nodes<T: ModuleTree>(model: &T) -> Vec<(String, &'static str, Option<Kind>)> {
    named_modules(model)
        .into_iter()
        .map(|node| (node.path().to_owned(), node.type_name(), node.kind()))
        .collect()
}

fn owned(
    expected: &[(&str, &'static str, Option<Kind>)],
) -> Vec<(String, &'static str, Option<Kind>)> {
    expected
        .iter()
        .map(|&(path, type_name, kind)| (path.to_owned(), type_name, kind))
        .collect()
}

const L: Option<Kind> = Some(Kind::Linear);

// ---------------------------------------------------------------- type parameters

#[derive(ModuleTree)]
struct Wrapper<T> {
    inner: T,
}

#[derive(ModuleTree)]
struct Decoder<L> {
    #[tree(rename = "model.layers")]
    layers: Vec<L>,
    norm: Option<Box<L>>,
}

#[test]
fn used_type_parameters_are_walked() {
    let wrapper = Wrapper { inner: LINEAR };
    assert_eq!(
        nodes(&wrapper),
        owned(&[("", "Wrapper", None), ("inner", "Linear", L)])
    );
    let decoder = Decoder {
        layers: vec![Wrapper { inner: LINEAR }, Wrapper { inner: LINEAR }],
        norm: Some(Box::new(Wrapper { inner: LINEAR })),
    };
    assert_eq!(
        nodes(&decoder),
        owned(&[
            ("", "Decoder", None),
            ("model.layers", "Vec", None),
            ("model.layers.0", "Wrapper", None),
            ("model.layers.0.inner", "Linear", L),
            ("model.layers.1", "Wrapper", None),
            ("model.layers.1.inner", "Linear", L),
            ("norm", "Wrapper", None),
            ("norm.inner", "Linear", L),
        ])
    );
}

#[derive(ModuleTree)]
struct Cached<T, C> {
    layer: T,
    #[tree(skip)]
    cache: C,
}

#[derive(ModuleTree)]
struct Typed<B> {
    proj: Linear,
    backend: PhantomData<B>,
    pair: PhantomData<(B, Box<B>)>,
}

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct GenericLeaf<W> {
    weight: Vec<W>,
}

#[derive(ModuleTree)]
struct ForeignField<W> {
    #[layer(kind = "linear")]
    proj: W,
    #[layer(kind = "linear")]
    projs: Vec<W>,
}

#[test]
fn unused_type_parameters_are_not_bounded() {
    let cached = Cached {
        layer: LINEAR,
        cache: NotAModule,
    };
    assert_eq!(cached.cache, NotAModule);
    assert_eq!(
        nodes(&cached),
        owned(&[("", "Cached", None), ("layer", "Linear", L)])
    );

    let typed: Typed<NotAModule> = Typed {
        proj: LINEAR,
        backend: PhantomData,
        pair: PhantomData,
    };
    assert_eq!(
        nodes(&typed),
        owned(&[("", "Typed", None), ("proj", "Linear", L)])
    );

    let leaf = GenericLeaf {
        weight: vec![NotAModule],
    };
    assert_eq!(leaf.weight.len(), 1);
    assert_eq!(nodes(&leaf), owned(&[("", "GenericLeaf", L)]));

    // A `#[layer]` field needs no impl, only a `'static` type to hand out as `Any`.
    let foreign = ForeignField {
        proj: NotAModule,
        projs: vec![NotAModule],
    };
    assert_eq!(
        nodes(&foreign),
        owned(&[
            ("", "ForeignField", None),
            ("proj", "W", L),
            ("projs", "Vec", L)
        ])
    );
}

#[derive(ModuleTree)]
enum Either<A, B> {
    Left(A),
    Right { right: B },
}

#[test]
fn generic_enums() {
    // `B` is walked in `Right`, so it is bounded too.
    let left: Either<Linear, Wrapper<Linear>> = Either::Left(LINEAR);
    assert_eq!(nodes(&left), owned(&[("", "Linear", L)]));
    let right: Either<Linear, Wrapper<Linear>> = Either::Right {
        right: Wrapper { inner: LINEAR },
    };
    assert_eq!(
        nodes(&right),
        owned(&[
            ("", "Either", None),
            ("right", "Wrapper", None),
            ("right.inner", "Linear", L),
        ])
    );
}

// ---------------------------------------------------------------- lifetimes and const generics

#[derive(ModuleTree)]
struct Borrowed<'a, T> {
    layer: &'a T,
    layers: &'a Vec<T>,
    #[tree(skip)]
    name: &'a str,
}

#[test]
fn reference_fields_are_walked_read_only() {
    let layers = vec![LINEAR, LINEAR];
    let borrowed = Borrowed {
        layer: &layers[0],
        layers: &layers,
        name: "borrowed",
    };
    assert_eq!(borrowed.name, "borrowed");
    assert_eq!(
        nodes(&borrowed),
        owned(&[
            ("", "Borrowed", None),
            ("layer", "Linear", L),
            ("layers", "Vec", None),
            ("layers.0", "Linear", L),
            ("layers.1", "Linear", L),
        ])
    );
}

/// A `#[layer]` field is handed out as `Any`, so a borrowing one makes the impl hold for
/// `'static` borrows only (such as weights in a `static`).
#[derive(ModuleTree)]
struct View<'a> {
    #[layer(kind = "embedding")]
    table: &'a [f32],
    layer: &'a Linear,
}

static TABLE: [f32; 3] = [0.0, 1.0, 2.0];

#[test]
fn borrowing_field_layers() {
    let view = View {
        table: &TABLE,
        layer: &LINEAR,
    };
    assert_eq!(
        nodes(&view),
        owned(&[
            ("", "View", None),
            ("table", "[f32]", Some(Kind::Embedding)),
            ("layer", "Linear", L),
        ])
    );
}

#[derive(ModuleTree)]
struct Stack<L, const N: usize> {
    layers: [L; N],
    #[layer(kind = "norm")]
    scales: [f32; N],
}

#[test]
fn const_generics() {
    let stack = Stack {
        layers: [LINEAR, LINEAR, LINEAR],
        scales: [1.0; 3],
    };
    assert_eq!(
        nodes(&stack),
        owned(&[
            ("", "Stack", None),
            ("layers", "array", None),
            ("layers.0", "Linear", L),
            ("layers.1", "Linear", L),
            ("layers.2", "Linear", L),
            ("scales", "[f32;N]", Some(Kind::Norm)),
        ])
    );
    // The name of a field-level layer is its type as written.
    let empty: Stack<Linear, 0> = Stack {
        layers: [],
        scales: [],
    };
    assert_eq!(
        nodes(&empty),
        owned(&[
            ("", "Stack", None),
            ("layers", "array", None),
            ("scales", "[f32;N]", Some(Kind::Norm)),
        ])
    );
}

#[derive(ModuleTree)]
struct Constrained<T, U = NotAModule>
where
    T: Clone + Default,
    U: Copy,
{
    layer: T,
    #[tree(skip)]
    extra: U,
}

#[test]
fn where_clauses_and_defaults_are_kept() {
    let constrained: Constrained<Linear> = Constrained {
        layer: LINEAR,
        extra: NotAModule,
    };
    assert_eq!(constrained.extra, NotAModule);
    assert_eq!(
        nodes(&constrained),
        owned(&[("", "Constrained", None), ("layer", "Linear", L)])
    );
}

impl Default for Linear {
    fn default() -> Self {
        LINEAR
    }
}

// ---------------------------------------------------------------- associated types and `bound`

trait Config {
    type Layer;
    type Backend;
}

struct LinearConfig;

impl Config for LinearConfig {
    type Layer = Linear;
    type Backend = NotAModule;
}

/// `C` itself is not a module: the bound goes on the associated type the field uses.
#[derive(ModuleTree)]
struct Configured<C: Config> {
    layers: Vec<C::Layer>,
    #[tree(skip)]
    backend: PhantomData<C::Backend>,
}

/// The user's bound replaces the inferred one: here `T` is walked only through `Arc<T>`, and the
/// bound is spelled on the wrapper.
#[derive(ModuleTree)]
#[tree(bound = "std::sync::Arc<T>: ModuleTree")]
struct Overridden<T: ?Sized> {
    shared: std::sync::Arc<T>,
}

/// An empty `bound` adds nothing. Inferred, it would bound `T` because the walked field's type
/// mentions it; but `Typed<T>` is a module tree for every `T`.
#[derive(ModuleTree)]
#[tree(bound = "")]
struct Unbounded<T> {
    typed: Typed<T>,
}

#[test]
fn associated_types_and_bound_overrides() {
    let configured: Configured<LinearConfig> = Configured {
        layers: vec![LINEAR],
        backend: PhantomData,
    };
    assert_eq!(
        nodes(&configured),
        owned(&[
            ("", "Configured", None),
            ("layers", "Vec", None),
            ("layers.0", "Linear", L),
        ])
    );

    let overridden = Overridden {
        shared: std::sync::Arc::new(LINEAR),
    };
    assert_eq!(
        nodes(&overridden),
        owned(&[("", "Overridden", None), ("shared", "Linear", L)])
    );

    let unbounded = Unbounded::<NotAModule> {
        typed: Typed {
            proj: LINEAR,
            backend: PhantomData,
            pair: PhantomData,
        },
    };
    assert_eq!(
        nodes(&unbounded),
        owned(&[
            ("", "Unbounded", None),
            ("typed", "Typed", None),
            ("typed.proj", "Linear", L),
        ])
    );
}

#[test]
fn generic_types_do_not_downcast() {
    // `as_any` needs `'static` without bounding every parameter: the derive gives it to
    // non-generic types only.
    let wrapper = Wrapper { inner: LINEAR };
    let mut downcast = Vec::new();
    moduletree::walk(&wrapper, |node| {
        downcast.push((
            node.path().to_string(),
            node.downcast_ref::<Wrapper<Linear>>().is_some(),
            node.downcast_ref::<Linear>().is_some(),
        ));
    });
    assert_eq!(
        downcast,
        [
            (String::new(), false, false),
            ("inner".to_owned(), false, true)
        ]
    );
}

// ---------------------------------------------------------------- the static schema, pinned

mod schema_common;

#[test]
fn schemas_are_pinned() {
    let out = schema_common::schemas(
        &["generics"],
        &[
            ("Wrapper<Linear>", &Wrapper::<Linear>::SCHEMA),
            (
                "Decoder<Wrapper<Linear>>",
                &Decoder::<Wrapper<Linear>>::SCHEMA,
            ),
            (
                "Cached<Linear, NotAModule>",
                &Cached::<Linear, NotAModule>::SCHEMA,
            ),
            ("Typed<NotAModule>", &Typed::<NotAModule>::SCHEMA),
            ("GenericLeaf<f32>", &GenericLeaf::<f32>::SCHEMA),
            ("ForeignField<f32>", &ForeignField::<f32>::SCHEMA),
            (
                "Either<Linear, Wrapper<Linear>>",
                &Either::<Linear, Wrapper<Linear>>::SCHEMA,
            ),
            ("Borrowed<Linear>", &Borrowed::<'static, Linear>::SCHEMA),
            ("View", &View::<'static>::SCHEMA),
            ("Stack<Linear, 3>", &Stack::<Linear, 3>::SCHEMA),
            ("Constrained<Linear>", &Constrained::<Linear>::SCHEMA),
            (
                "Configured<LinearConfig>",
                &Configured::<LinearConfig>::SCHEMA,
            ),
            ("Overridden<Linear>", &Overridden::<Linear>::SCHEMA),
            ("Unbounded<NotAModule>", &Unbounded::<NotAModule>::SCHEMA),
        ],
    );
    fixture_common::assert_snapshot("schemas/generics.txt", &out);
}

mod fixture_common;
