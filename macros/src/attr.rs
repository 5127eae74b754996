//! `#[layer]`, `#[expert]` and `#[tree]`, parsed with `parse_nested_meta` into [`ContainerAttrs`]
//! and [`FieldAttrs`]. Unknown and duplicate keys are caught here, in one place; rules that need
//! several attributes together live in `check`.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::Parse;
use syn::parse::discouraged::Speculative;
use syn::punctuated::Punctuated;
use syn::{Attribute, LitBool, LitInt, LitStr, Meta, Token, WherePredicate};

use crate::errors::Errors;

/// A value with the span of the token that gave it.
#[derive(Clone)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// What `#[expert]` marks: routed experts, or with `#[expert(shared)]` shared ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expert {
    Routed,
    Shared,
}

/// The kind written in `#[layer(kind = "...")]` or `#[layer(custom = "...")]`.
#[derive(Clone)]
pub enum KindAttr {
    Builtin(LitStr),
    Custom(LitStr),
}

/// `#[layer(...)]`, on a type or a field.
#[derive(Default, Clone)]
pub struct LayerAttr {
    /// The span of the first `layer` attribute, for errors about the attribute as a whole.
    pub span: Option<Span>,
    pub kind: Option<Spanned<KindAttr>>,
    pub head: Option<Span>,
    pub parallel: Option<LitStr>,
    /// `parts = [a, b, ...]`: a packed layer's fused parts.
    pub parts: Option<Parts>,
    /// `parts` was given but could not be read (already reported).
    pub parts_invalid: bool,
    /// `expert_axis = N` on a `grouped_linear`.
    pub expert_axis: Option<LitInt>,
    pub expert_flag: Option<Span>,
    /// `router`: on a field without a kind, the role of the field's own node.
    pub router: Option<Span>,
    /// A `#[layer]` attribute that could not be read in full: its errors are reported already,
    /// so `check` does not add "needs a kind" on top.
    pub invalid: bool,
}

/// `parts = [a, b, ...]`: the sizes (or ratios) of a packed layer's fused parts, as written.
#[derive(Clone)]
pub struct Parts {
    pub sizes: Vec<LitInt>,
    /// The brackets, for errors about the list as a whole.
    pub span: Span,
}

impl Parse for Parts {
    fn parse(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        let content;
        let brackets = syn::bracketed!(content in input);
        let sizes = Punctuated::<LitInt, Token![,]>::parse_terminated(&content)?;
        Ok(Parts {
            sizes: sizes.into_iter().collect(),
            span: brackets.span.join(),
        })
    }
}

/// The attributes of the deriving type.
#[derive(Default)]
pub struct ContainerAttrs {
    pub layer: LayerAttr,
    pub expert: Option<Spanned<Expert>>,
    pub krate: Option<syn::Path>,
    pub bound: Option<Spanned<Vec<WherePredicate>>>,
    pub register: Option<Spanned<bool>>,
    /// `#[tree(skip)]`, `#[tree(rename)]`, `#[tree(layers)]` given to the type: only for fields.
    pub misplaced: Vec<Spanned<&'static str>>,
}

/// The attributes of one field.
#[derive(Default)]
pub struct FieldAttrs {
    pub layer: LayerAttr,
    pub expert: Option<Spanned<Expert>>,
    pub skip: Option<Span>,
    /// burn's `#[module(skip)]`, honoured without a second mark.
    pub burn_skip: bool,
    pub rename: Option<LitStr>,
    pub layers: Option<Span>,
    pub flatten: Option<Span>,
}

/// The attributes on an enum variant: none are supported, each is reported.
#[derive(Default)]
pub struct VariantAttrs {
    pub misplaced: Vec<Spanned<&'static str>>,
}

const LAYER_KEYS: &str =
    "`kind`, `custom`, `head`, `router`, `parallel`, `parts`, `expert_axis`, `expert_flag`";
const TYPE_TREE_KEYS: &str = "`crate`, `bound`, `register`";
const FIELD_TREE_KEYS: &str = "`skip`, `rename`, `layers`, `flatten`";

pub fn container(attrs: &[Attribute], errors: &mut Errors) -> ContainerAttrs {
    let mut parsed = ContainerAttrs::default();
    for attr in attrs {
        if attr.path().is_ident("layer") {
            layer(attr, &mut parsed.layer, errors);
        } else if attr.path().is_ident("expert") {
            expert(attr, &mut parsed.expert, errors);
        } else if attr.path().is_ident("tree") {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("crate") {
                    if let Some(path) = crate_path(&meta, errors)? {
                        set(&mut parsed.krate, path, &meta, "tree", errors);
                    }
                } else if meta.path.is_ident("bound") {
                    let example = "bound = \"T: moduletree::ModuleTree\"";
                    if let Some(lit) = value::<LitStr>(&meta, "a string", example, errors)? {
                        match lit.parse_with(Punctuated::<WherePredicate, Token![,]>::parse_terminated)
                        {
                            Ok(predicates) => {
                                let bound = Spanned {
                                    value: predicates.into_iter().collect(),
                                    span: lit.span(),
                                };
                                set(&mut parsed.bound, bound, &meta, "tree", errors);
                            }
                            Err(error) => errors.spanned(
                                &lit,
                                format!(
                                    "`bound` must hold where-clause predicates such as `T: moduletree::ModuleTree`, separated by commas: {error}"
                                ),
                            ),
                        }
                    }
                } else if meta.path.is_ident("register") {
                    let example = "register = false";
                    if let Some(lit) = value::<LitBool>(&meta, "`true` or `false`", example, errors)? {
                        let register = Spanned {
                            value: lit.value,
                            span: lit.span(),
                        };
                        set(&mut parsed.register, register, &meta, "tree", errors);
                    }
                } else if let Some(key) = ["skip", "rename", "layers", "flatten"]
                    .into_iter()
                    .find(|key| meta.path.is_ident(key))
                {
                    skip_value(&meta)?;
                    parsed.misplaced.push(Spanned {
                        value: key,
                        span: key_span(&meta),
                    });
                } else {
                    unknown_key(&meta, "#[tree]` on a type", TYPE_TREE_KEYS, errors)?;
                }
                Ok(())
            });
            if let Err(error) = result {
                errors.push(error);
            }
        }
    }
    parsed
}

pub fn field(attrs: &[Attribute], errors: &mut Errors) -> FieldAttrs {
    let mut parsed = FieldAttrs::default();
    for attr in attrs {
        if attr.path().is_ident("layer") {
            layer(attr, &mut parsed.layer, errors);
        } else if attr.path().is_ident("expert") {
            expert(attr, &mut parsed.expert, errors);
        } else if attr.path().is_ident("module") {
            parsed.burn_skip |= is_burn_skip(attr);
        } else if attr.path().is_ident("tree") {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    let span = flag(&meta, errors)?;
                    set(&mut parsed.skip, span, &meta, "tree", errors);
                } else if meta.path.is_ident("layers") {
                    let span = flag(&meta, errors)?;
                    set(&mut parsed.layers, span, &meta, "tree", errors);
                } else if meta.path.is_ident("flatten") {
                    let span = flag(&meta, errors)?;
                    set(&mut parsed.flatten, span, &meta, "tree", errors);
                } else if meta.path.is_ident("rename") {
                    let example = "rename = \"self_attn\"";
                    if let Some(lit) = value::<LitStr>(&meta, "a string", example, errors)? {
                        set(&mut parsed.rename, lit, &meta, "tree", errors);
                    }
                } else {
                    unknown_key(&meta, "#[tree]` on a field", FIELD_TREE_KEYS, errors)?;
                }
                Ok(())
            });
            if let Err(error) = result {
                errors.push(error);
            }
        }
    }
    parsed
}

pub fn variant(attrs: &[Attribute]) -> VariantAttrs {
    let mut parsed = VariantAttrs::default();
    for attr in attrs {
        for name in ["layer", "expert", "tree"] {
            if attr.path().is_ident(name) {
                parsed.misplaced.push(Spanned {
                    value: name,
                    span: attr_span(attr),
                });
            }
        }
    }
    parsed
}

fn layer(attr: &Attribute, parsed: &mut LayerAttr, errors: &mut Errors) {
    parsed.span.get_or_insert(attr_span(attr));
    if let Meta::Path(_) = attr.meta {
        // `#[layer]` alone: `check` reports the missing kind with the fix.
        return;
    }
    let result = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("kind") || meta.path.is_ident("custom") {
            let builtin = meta.path.is_ident("kind");
            let example = if builtin {
                "kind = \"linear\""
            } else {
                "custom = \"name\""
            };
            let Some(lit) = value::<LitStr>(&meta, "a string", example, errors)? else {
                parsed.invalid = true;
                return Ok(());
            };
            let kind = if builtin {
                KindAttr::Builtin(lit)
            } else {
                KindAttr::Custom(lit)
            };
            match &parsed.kind {
                None => {
                    parsed.kind = Some(Spanned {
                        value: kind,
                        span: key_span(&meta),
                    });
                }
                Some(Spanned {
                    value: KindAttr::Builtin(_),
                    ..
                }) if builtin => duplicate(&meta, "layer", errors),
                Some(Spanned {
                    value: KindAttr::Custom(_),
                    ..
                }) if !builtin => duplicate(&meta, "layer", errors),
                Some(_) => errors.at(
                    key_span(&meta),
                    "`kind` and `custom` cannot both be given: a layer has one kind",
                ),
            }
        } else if meta.path.is_ident("head") {
            let span = flag(&meta, errors)?;
            set(&mut parsed.head, span, &meta, "layer", errors);
        } else if meta.path.is_ident("expert_flag") {
            let span = flag(&meta, errors)?;
            set(&mut parsed.expert_flag, span, &meta, "layer", errors);
        } else if meta.path.is_ident("router") {
            let span = flag(&meta, errors)?;
            set(&mut parsed.router, span, &meta, "layer", errors);
        } else if meta.path.is_ident("parallel") {
            let example = "parallel = \"column\"";
            if let Some(lit) = value::<LitStr>(&meta, "a string", example, errors)? {
                set(&mut parsed.parallel, lit, &meta, "layer", errors);
            }
        } else if meta.path.is_ident("parts") {
            let example = "parts = [1, 1]";
            match value::<Parts>(&meta, "a list of sizes", example, errors)? {
                Some(parts) => set(&mut parsed.parts, parts, &meta, "layer", errors),
                None => parsed.parts_invalid = true,
            }
        } else if meta.path.is_ident("expert_axis") {
            let example = "expert_axis = 0";
            if let Some(axis) = value::<LitInt>(&meta, "an axis number", example, errors)? {
                set(&mut parsed.expert_axis, axis, &meta, "layer", errors);
            }
        } else {
            unknown_key(&meta, "#[layer]`", LAYER_KEYS, errors)?;
        }
        Ok(())
    });
    if let Err(error) = result {
        parsed.invalid = true;
        errors.push(error);
    }
}

fn expert(attr: &Attribute, parsed: &mut Option<Spanned<Expert>>, errors: &mut Errors) {
    let value = match &attr.meta {
        Meta::Path(_) => Expert::Routed,
        Meta::List(list) => {
            let mut value = None;
            let result = list.parse_nested_meta(|meta| {
                if meta.path.is_ident("shared") && value.is_none() {
                    value = Some(Expert::Shared);
                    Ok(())
                } else if meta.path.is_ident("shared") {
                    Err(meta.error("duplicate `shared` in `#[expert]`"))
                } else {
                    Err(meta.error(
                        "unknown `#[expert]` argument; expected `shared`: write `#[expert]` for \
                         routed experts or `#[expert(shared)]` for shared ones",
                    ))
                }
            });
            if let Err(error) = result {
                errors.push(error);
            }
            value.unwrap_or(Expert::Routed)
        }
        Meta::NameValue(name_value) => {
            errors.spanned(
                &name_value.value,
                "`#[expert]` takes no value: write `#[expert]` or `#[expert(shared)]`",
            );
            Expert::Routed
        }
    };
    if parsed.is_some() {
        errors.spanned(attr, "duplicate `#[expert]` attribute");
    } else {
        *parsed = Some(Spanned {
            value,
            span: attr_span(attr),
        });
    }
}

/// Whether `attr` is burn's `#[module(skip)]`. burn owns `#[module]` and its other keys, so any
/// other content is left alone rather than reported.
fn is_burn_skip(attr: &Attribute) -> bool {
    let mut skip = false;
    let _ = attr.parse_nested_meta(|meta| {
        skip |= meta.path.is_ident("skip");
        if meta.input.peek(Token![=]) {
            let _: syn::Expr = meta.value()?.parse()?;
        }
        Ok(())
    });
    skip
}

fn set<T>(
    slot: &mut Option<T>,
    value: T,
    meta: &ParseNestedMeta<'_>,
    attribute: &str,
    errors: &mut Errors,
) {
    if slot.is_some() {
        duplicate(meta, attribute, errors);
    } else {
        *slot = Some(value);
    }
}

fn duplicate(meta: &ParseNestedMeta<'_>, attribute: &str, errors: &mut Errors) {
    errors.at(
        key_span(meta),
        format!("duplicate key `{}` in `#[{attribute}]`", key_name(meta)),
    );
}

fn unknown_key(
    meta: &ParseNestedMeta<'_>,
    place: &str,
    expected: &str,
    errors: &mut Errors,
) -> syn::Result<()> {
    errors.at(
        key_span(meta),
        format!(
            "unknown key `{}` in `{place}; expected one of {expected}",
            key_name(meta)
        ),
    );
    skip_value(meta).map(drop)
}

/// A key that takes no value (`head`, `skip`, ...); a value given anyway is reported and skipped.
fn flag(meta: &ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<Span> {
    if let Some(value) = skip_value(meta)? {
        let key = key_name(meta);
        errors.spanned(
            value,
            format!("`{key}` takes no value: write `{key}` alone"),
        );
    }
    Ok(key_span(meta))
}

/// The value of `key = value`. A missing value, or one that is not a `T`, is reported (as
/// `what`, with `example`) and skipped, so that the keys after it are still read.
fn value<T: Parse>(
    meta: &ParseNestedMeta<'_>,
    what: &str,
    example: &str,
    errors: &mut Errors,
) -> syn::Result<Option<T>> {
    let key = key_name(meta);
    if !meta.input.peek(Token![=]) {
        skip_value(meta)?;
        errors.at(
            key_span(meta),
            format!("`{key}` needs a value: write `{example}`"),
        );
        return Ok(None);
    }
    let input = meta.value()?;
    let fork = input.fork();
    if let Ok(parsed) = fork.parse::<T>()
        && (fork.is_empty() || fork.peek(Token![,]))
    {
        input.advance_to(&fork);
        return Ok(Some(parsed));
    }
    let found: syn::Expr = input.parse()?;
    errors.spanned(found, format!("`{key}` takes {what}: write `{example}`"));
    Ok(None)
}

/// `crate = path`, or `crate = "path"` as serde writes it.
fn crate_path(meta: &ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<Option<syn::Path>> {
    let example = "crate = my_crate::moduletree";
    if meta.input.peek(Token![=]) && meta.input.peek2(LitStr) {
        let lit: LitStr = meta.value()?.parse()?;
        return Ok(match lit.parse::<syn::Path>() {
            Ok(path) => Some(path),
            Err(_) => {
                errors.spanned(&lit, format!("`crate` takes a path: write `{example}`"));
                None
            }
        });
    }
    value::<syn::Path>(meta, "a path", example, errors)
}

/// Consumes `= value` or `(...)` after a key so that parsing can go on to the next key, and
/// returns the consumed tokens for errors about them.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<Option<TokenStream>> {
    if meta.input.peek(Token![=]) {
        let value: syn::Expr = meta.value()?.parse()?;
        Ok(Some(value.into_token_stream()))
    } else if meta.input.peek(syn::token::Paren) {
        let group: TokenTree = meta.input.parse()?;
        Ok(Some(group.into_token_stream()))
    } else {
        Ok(None)
    }
}

fn key_name(meta: &ParseNestedMeta<'_>) -> String {
    meta.path.get_ident().map_or_else(
        || meta.path.to_token_stream().to_string().replace(' ', ""),
        ToString::to_string,
    )
}

fn key_span(meta: &ParseNestedMeta<'_>) -> Span {
    syn::spanned::Spanned::span(&meta.path)
}

fn attr_span(attr: &Attribute) -> Span {
    syn::spanned::Spanned::span(attr.path())
}
