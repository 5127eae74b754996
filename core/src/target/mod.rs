//! LoRA targets: which layers of a model an adapter adapts.
//!
//! A [`TargetSpec`] is a list of entries — shorthands (`all-linear`, `all-embedding`,
//! `all-router`, `all-experts`, `all-shared-experts`), path patterns (`q_proj`, `layers.<>.mlp.down_proj`, `^lm_head`, `experts.*.w1`,
//! `**.up_proj`) and regexes (`re:.*\.layers\.1\..*`) — plus exclusions in the same grammar, a
//! layer filter, and per-pattern ranks and alphas. Patterns are parsed once ([`Pattern`]) and
//! match whole path segments, so `q_proj` never matches `qq_proj` or `q_proj_norm` and `layers.1`
//! never matches `layers.10`. [`TargetSpec::resolve`] walks a model (or a type's static schema)
//! and returns the selected layers in walk order, per-entry counts and warnings, or errors that
//! say which entry is wrong and why, with suggestions. A spec can be read from, and a resolution
//! written to, PEFT's `adapter_config.json` ([`peft`]). The [`targets!`](crate::targets) macro
//! checks entries against a type's schema during compilation.
//!
//! ```
//! use moduletree::ModuleTree;
//! use moduletree::target::TargetSpec;
//!
//! #[derive(ModuleTree)]
//! struct Attention {
//!     #[layer(kind = "linear")]
//!     q_proj: (),
//!     #[layer(kind = "linear")]
//!     out_proj: (),
//! }
//!
//! #[derive(ModuleTree)]
//! struct Model {
//!     #[tree(layers)]
//!     layers: Vec<Attention>,
//! }
//!
//! let layer = || Attention { q_proj: (), out_proj: () };
//! let model = Model { layers: vec![layer(), layer()] };
//! let resolution = TargetSpec::parse(["q_proj"]).unwrap().with_layers([1]).resolve(&model).unwrap();
//! assert_eq!(resolution.paths().collect::<Vec<_>>(), ["layers.1.q_proj"]);
//!
//! let error = TargetSpec::parse(["q_projj"]).unwrap().resolve(&model).unwrap_err();
//! assert_eq!(error.to_string(), "target `q_projj` matches no module; did you mean `q_proj`?");
//! ```

pub mod checked;
pub mod pattern;
pub mod peft;
pub mod report;
pub mod resolve;
pub mod schema_match;
mod shorthand;
pub mod spec;
pub mod suggest;
mod syntax;

pub use pattern::{Pattern, PatternKind, PatternSegment, Shorthand};
pub use peft::{PeftConfigError, PeftTargets};
pub use report::{
    EntryReport, Resolution, ResolveError, ResolvedLayer, TargetError, TargetWarning,
};
pub use schema_match::{SchemaCheck, check_entry};
pub use spec::{DEFAULT_ALPHA, DEFAULT_RANK, LayerFilter, LayerIndexSource, TargetSpec};
pub use syntax::{PatternError, PatternErrorKind};

/// Target entries checked against a type's static schema during compilation; evaluates to a
/// [`TargetSpec`] of those entries.
///
/// The type comes first, then `:` and the entries as string literals. Each entry must match at
/// least one leaf layer of the type's [`SCHEMA`](crate::ModuleTree::SCHEMA) (a shorthand: one
/// layer of its family), or the build fails with an error at that entry naming it, the type and
/// the nearest valid targets ([`checked::target_message`]'s words). A `re:`
/// entry is rejected: a regex cannot be checked in a constant, so build it with
/// [`TargetSpec::parse`] instead. The type must be concrete (the check is a constant item).
///
/// ```
/// use moduletree::ModuleTree;
///
/// #[derive(ModuleTree)]
/// struct Block {
///     #[layer(kind = "linear")]
///     q_proj: (),
///     #[layer(kind = "router")]
///     gate: (),
/// }
///
/// #[derive(ModuleTree)]
/// struct Model {
///     #[tree(layers)]
///     layers: Vec<Block>,
/// }
///
/// let spec = moduletree::targets!(Model: "q_proj", "layers.<>.gate", "all-router");
/// assert_eq!(spec.entries().len(), 3);
/// ```
///
/// ```compile_fail
/// # use moduletree::ModuleTree;
/// #[derive(ModuleTree)]
/// struct Block {
///     #[layer(kind = "linear")]
///     q_proj: (),
/// }
/// let spec = moduletree::targets!(Block: "k_proj");
/// ```
#[macro_export]
macro_rules! targets {
    ($model:ty : $($entry:literal),+ $(,)?) => {
        $crate::__private::__targets!($crate; $model : $($entry),+)
    };
}
