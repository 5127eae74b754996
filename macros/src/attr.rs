//! `#[layer]`, `#[expert]` and `#[tree]`, parsed with `parse_nested_meta` into [`ContainerAttrs`]
//! and [`FieldAttrs`]. Unknown and duplicate keys are caught here, in one place; rules that need
//! several attributes together live in `check`.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::punctuated::Punctuated;
use syn::{Attribute, LitBool, LitStr, Token, WherePredicate};

use crate::errors::Errors;

/// A value with the span of the token that gave it.
#[derive(Clone)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
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
    pub expert_flag: Option<Span>,
}

/// The attributes of the deriving type.
#[derive(Default)]
pub struct ContainerAttrs {
    pub layer: LayerAttr,
    pub expert: Option<Span>,
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
    pub expert: Option<Span>,
    pub skip: Option<Span>,
    /// burn's `#[module(skip)]`, honoured without a second mark.
    pub burn_skip: bool,
    pub rename: Option<LitStr>,
    pub layers: Option<Span>,
}

/// The attributes on an enum variant: none are supported, each is reported.
#[derive(Default)]
pub struct VariantAttrs {
    pub misplaced: Vec<Spanned<&'static str>>,
}

const LAYER_KEYS: &str = "`kind`, `custom`, `head`, `parallel`, `expert_flag`";
const TYPE_TREE_KEYS: &str = "`crate`, `bound`, `register`";
const FIELD_TREE_KEYS: &str = "`skip`, `rename`, `layers`";

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
                    let path: syn::Path = meta.value()?.parse()?;
                    set(&mut parsed.krate, path, &meta, "crate", "tree", errors);
                } else if meta.path.is_ident("bound") {
                    let lit: LitStr = meta.value()?.parse()?;
                    let predicates =
                        lit.parse_with(Punctuated::<WherePredicate, Token![,]>::parse_terminated)?;
                    let bound = Spanned {
                        value: predicates.into_iter().collect(),
                        span: lit.span(),
                    };
                    set(&mut parsed.bound, bound, &meta, "bound", "tree", errors);
                } else if meta.path.is_ident("register") {
                    let lit: LitBool = meta.value()?.parse()?;
                    let register = Spanned {
                        value: lit.value,
                        span: lit.span(),
                    };
                    set(
                        &mut parsed.register,
                        register,
                        &meta,
                        "register",
                        "tree",
                        errors,
                    );
                } else if let Some(key) = ["skip", "rename", "layers"]
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
                    set(
                        &mut parsed.skip,
                        key_span(&meta),
                        &meta,
                        "skip",
                        "tree",
                        errors,
                    );
                } else if meta.path.is_ident("layers") {
                    set(
                        &mut parsed.layers,
                        key_span(&meta),
                        &meta,
                        "layers",
                        "tree",
                        errors,
                    );
                } else if meta.path.is_ident("rename") {
                    let lit: LitStr = meta.value()?.parse()?;
                    set(&mut parsed.rename, lit, &meta, "rename", "tree", errors);
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
    let result = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("kind") || meta.path.is_ident("custom") {
            let lit: LitStr = meta.value()?.parse()?;
            let kind = if meta.path.is_ident("kind") {
                KindAttr::Builtin(lit)
            } else {
                KindAttr::Custom(lit)
            };
            let kind = Spanned {
                value: kind,
                span: key_span(&meta),
            };
            if parsed.kind.is_some() {
                errors.at(
                    key_span(&meta),
                    "a layer has one kind: `kind` and `custom` may be given once, not both",
                );
            } else {
                parsed.kind = Some(kind);
            }
        } else if meta.path.is_ident("head") {
            set(
                &mut parsed.head,
                key_span(&meta),
                &meta,
                "head",
                "layer",
                errors,
            );
        } else if meta.path.is_ident("expert_flag") {
            let span = key_span(&meta);
            set(
                &mut parsed.expert_flag,
                span,
                &meta,
                "expert_flag",
                "layer",
                errors,
            );
        } else if meta.path.is_ident("parallel") {
            let lit: LitStr = meta.value()?.parse()?;
            set(
                &mut parsed.parallel,
                lit,
                &meta,
                "parallel",
                "layer",
                errors,
            );
        } else {
            unknown_key(&meta, "#[layer]`", LAYER_KEYS, errors)?;
        }
        Ok(())
    });
    if let Err(error) = result {
        errors.push(error);
    }
}

fn expert(attr: &Attribute, parsed: &mut Option<Span>, errors: &mut Errors) {
    if let Err(error) = attr.meta.require_path_only() {
        errors.at(
            error.span(),
            "`#[expert]` takes no arguments: write `#[expert]` alone",
        );
    }
    if parsed.is_some() {
        errors.spanned(attr, "duplicate `#[expert]` attribute");
    } else {
        *parsed = Some(attr_span(attr));
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
    key: &str,
    attribute: &str,
    errors: &mut Errors,
) {
    if slot.is_some() {
        errors.at(
            key_span(meta),
            format!("duplicate key `{key}` in `#[{attribute}]`"),
        );
    } else {
        *slot = Some(value);
    }
}

fn unknown_key(
    meta: &ParseNestedMeta<'_>,
    place: &str,
    expected: &str,
    errors: &mut Errors,
) -> syn::Result<()> {
    let key = meta.path.get_ident().map_or_else(
        || {
            quote::ToTokens::to_token_stream(&meta.path)
                .to_string()
                .replace(' ', "")
        },
        ToString::to_string,
    );
    errors.at(
        key_span(meta),
        format!("unknown key `{key}` in `{place}; expected one of {expected}"),
    );
    skip_value(meta)
}

/// Consumes `= value` or `(...)` after an unknown key so parsing can go on to the next key.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_value(&inner))?;
    }
    Ok(())
}

fn key_span(meta: &ParseNestedMeta<'_>) -> Span {
    syn::spanned::Spanned::span(&meta.path)
}

fn attr_span(attr: &Attribute) -> Span {
    syn::spanned::Spanned::span(attr.path())
}
