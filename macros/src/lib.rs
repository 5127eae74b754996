//! The derive behind `moduletree`: `#[derive(ModuleTree)]`.
//!
//! Three stages, one job each: `ast` reads the input (with `attr` parsing the attributes),
//! `check` applies the rules that span several attributes or fields, and `expand` writes the
//! impl. Every user error is collected and reported at once; on error, `fallback` emits the
//! errors beside a stub impl so that one typo does not cascade. Nothing here panics on user input.

mod ast;
mod attr;
mod bound;
mod check;
mod errors;
mod expand;
mod fallback;
mod kinds;
mod layer;
mod targets;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `moduletree::ModuleTree`: the module tree of a struct or enum, walkable by path, with
/// a static schema (`SCHEMA`) the compiler can check targets against.
///
/// Every field that is not skipped must implement `ModuleTree` (numbers, `String`, `()`,
/// `PhantomData` and, with the integrations, tensors hold no module). Containers: `Vec<T>`,
/// `[T; N]` and tuples of modules add index segments, maps add key segments, `Option`, `Box`,
/// `Arc`, `Rc` and `&T` add nothing. An enum's variants add no segment.
///
/// # `#[layer(kind = "...")]`: a leaf layer
///
/// On a type, the type is a leaf and its fields are not walked; on a field, the field is a leaf
/// whatever its type (no impl needed). Kinds: `linear`, `grouped_linear` (experts fused in one
/// weight, always a routed expert), `layernorm_linear`, `embedding`, `router`, `conv`, `norm`,
/// or `custom = "name"`.
///
/// ```
/// use moduletree::ModuleTree;
///
/// #[derive(ModuleTree)]
/// #[layer(kind = "linear")]
/// struct Linear { weight: Vec<f32> }
///
/// #[derive(ModuleTree)]
/// struct Mlp {
///     up_proj: Linear,
///     #[layer(kind = "linear")]              // a foreign type, tagged in place
///     down_proj: [f32; 4],
///     #[layer(custom = "rotary")]
///     rope: (),
/// }
///
/// let mlp = Mlp { up_proj: Linear { weight: vec![] }, down_proj: [0.0; 4], rope: () };
/// assert_eq!(moduletree::find_all_linear_modules(&mlp), ["up_proj", "down_proj"]);
/// ```
///
/// # `#[layer(head)]`, `#[layer(router)]`: roles
///
/// `head` marks an output head, left out of `all-linear`. With a kind it describes the leaf the
/// attribute makes; alone on a field (as `router`, only on a field) it gives a role to the layer
/// the field's type reports, whose walk and downcasts stay its own.
///
/// ```
/// use moduletree::ModuleTree;
///
/// #[derive(ModuleTree)]
/// #[layer(kind = "linear")]
/// struct Linear;
///
/// #[derive(ModuleTree)]
/// struct Model {
///     #[layer(router)]
///     gate: Linear,
///     proj: Linear,
///     #[layer(head)]
///     lm_head: Linear,
/// }
///
/// let model = Model { gate: Linear, proj: Linear, lm_head: Linear };
/// assert_eq!(moduletree::find_all_linear_modules(&model), ["proj"]);
/// assert_eq!(moduletree::find_all_router_modules(&model), ["gate"]);
/// ```
///
/// # `#[layer(parallel = "...", parts = [...], expert_axis = N)]`: parallel facts
///
/// The tensor-parallel style (`column`, `row`, `replicated`, `vocab`, `column_gather`,
/// `row_split`, `packed_column`, `packed_row`), the sizes or ratios of a packed layer's fused
/// parts, and a `grouped_linear` weight's expert axis; `moduletree::parallel` turns them into
/// plans.
///
/// ```
/// use moduletree::{ModuleTree, Parallel};
///
/// #[derive(ModuleTree)]
/// struct Attention {
///     #[layer(kind = "linear", parallel = "packed_column", parts = [4, 1, 1])]
///     qkv_proj: (),
///     #[layer(kind = "linear", parallel = "row")]
///     o_proj: (),
/// }
///
/// let mut styles = Vec::new();
/// moduletree::walk(&Attention::SCHEMA, |node| styles.extend(node.parallel()));
/// assert_eq!(styles, [Parallel::PackedColumn, Parallel::Row]);
/// ```
///
/// # `#[layer(expert_flag)]`: the run-time expert flag
///
/// On the `bool` field of a `#[layer]` type that `set_linear_is_expert` sets.
///
/// ```
/// use moduletree::ModuleTree;
///
/// #[derive(ModuleTree)]
/// #[layer(kind = "linear")]
/// struct Linear { #[layer(expert_flag)] is_expert: bool }
///
/// #[derive(ModuleTree)]
/// struct Moe { #[expert] experts: Vec<Linear> }
///
/// let mut moe = Moe { experts: vec![Linear { is_expert: false }] };
/// assert_eq!(moduletree::set_linear_is_expert(&mut moe), ["experts.0"]);
/// assert!(moe.experts[0].is_expert);
/// ```
///
/// # `#[expert]`, `#[expert(shared)]`: experts
///
/// On a field or a type: the subtree holds routed experts (expert-parallel), or shared experts
/// (every token passes through them; replicated, so not routed experts).
///
/// ```
/// use moduletree::ModuleTree;
///
/// #[derive(ModuleTree)]
/// #[layer(kind = "linear")]
/// struct Linear;
///
/// #[derive(ModuleTree)]
/// struct Moe {
///     #[expert]
///     experts: Vec<Linear>,
///     #[expert(shared)]
///     shared_expert: Linear,
/// }
///
/// let moe = Moe { experts: vec![Linear, Linear], shared_expert: Linear };
/// assert_eq!(moduletree::find_layers(&moe, |node| node.is_expert() && node.is_layer()), ["experts.<>"]);
/// assert_eq!(moduletree::find_layers(&moe, |node| node.is_shared_expert()), ["shared_expert"]);
/// ```
///
/// # `#[tree(skip)]`, `#[tree(rename = "...")]`, `#[tree(flatten)]`, `#[tree(layers)]`: structure
///
/// `skip` leaves a field out (burn's `#[module(skip)]` does too). `rename` sets the field's path
/// segment; a dotted value adds several. `flatten` removes the field's own segment and node (a
/// struct whose one walked field is flattened adds no node at all). `layers` marks the container
/// whose index is the layer index of layer filters.
///
/// ```
/// use moduletree::ModuleTree;
///
/// #[derive(ModuleTree)]
/// #[layer(kind = "linear")]
/// struct Linear;
///
/// #[derive(ModuleTree)]
/// struct Traced<T> { #[tree(flatten)] inner: T, #[tree(skip)] span: &'static str }
///
/// #[derive(ModuleTree)]
/// struct Block { #[tree(rename = "self_attn.q_proj")] q: Traced<Linear> }
///
/// #[derive(ModuleTree)]
/// struct Model {
///     #[tree(rename = "model.layers", layers)]
///     blocks: Vec<Block>,
///     #[tree(skip)]
///     device: String,
/// }
///
/// let model = Model { blocks: vec![Block { q: Traced { inner: Linear, span: "q" } }], device: String::new() };
/// let paths: Vec<String> = moduletree::named_modules(&model).into_iter().map(|m| m.path().to_owned()).collect();
/// assert_eq!(paths, ["", "model.layers", "model.layers.0", "model.layers.0.self_attn.q_proj"]);
/// ```
///
/// # `#[tree(crate = ...)]`, `#[tree(bound = "...")]`, `#[tree(register = false)]`: the impl
///
/// Where to find `moduletree` (for a re-export), the where clause to use instead of the inferred
/// bounds, and leaving a non-generic type out of the registry.
///
/// ```
/// use moduletree::ModuleTree;
///
/// #[derive(ModuleTree)]
/// #[tree(crate = moduletree, bound = "T: moduletree::ModuleTree", register = false)]
/// struct Wrapper<T> { inner: T }
///
/// assert!(moduletree::registry::find("Wrapper").is_empty());
/// ```
///
/// Misuse is a compile error with a span on the offending token, every error at once.
#[proc_macro_derive(ModuleTree, attributes(layer, expert, tree))]
pub fn derive_module_tree(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}

/// The implementation of `moduletree::targets!`, which passes its own crate path first; use
/// that macro, not this one.
#[doc(hidden)]
#[proc_macro]
pub fn __targets(input: TokenStream) -> TokenStream {
    targets::expand(input.into()).into()
}
