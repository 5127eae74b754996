//! The rules that need more than one attribute or field, and the checked plan that `expand`
//! writes out. After `check`, nothing can go wrong: the expander never reports a user error.

use proc_macro2::Span;
use syn::{LitInt, LitStr, Member, Type};

use crate::ast::{Body, Field, Input, Style, Variant, unraw};
use crate::attr::Expert;
use crate::errors::Errors;
use crate::layer::layer;

/// The checked facts of a leaf layer.
pub struct Layer {
    pub kind: Kind,
    pub head: bool,
    /// The `moduletree::Parallel` variant (`"Column"`, `"PackedColumn"`, …).
    pub parallel: Option<&'static str>,
    /// A packed layer's part sizes.
    pub parts: Vec<u32>,
    /// A `grouped_linear`'s expert axis, when given.
    pub expert_axis: Option<u8>,
}

pub enum Kind {
    /// A `moduletree::Kind` variant name.
    Builtin(&'static str),
    Custom(String),
}

/// Where a field sits below its parent.
pub enum Place {
    /// Named segments: the field's name, or the parts of a dotted rename.
    Names(Vec<String>),
    /// A positional field: one index segment.
    Index(usize),
    /// The one field of a newtype variant: no segment at all.
    Here,
}

pub struct FieldPlan<'a> {
    pub member: Member,
    pub ty: &'a Type,
    pub walked: Option<Walked>,
}

/// How a field that is not skipped is walked.
pub struct Walked {
    pub place: Place,
    pub layer: Option<Layer>,
    pub expert: Option<Expert>,
    pub layers: bool,
    /// `#[layer(head)]` / `#[layer(router)]` without a kind: roles of the field's own node.
    pub head: bool,
    pub router: bool,
    /// `#[tree(flatten)]`.
    pub flatten: bool,
}

pub struct VariantPlan<'a> {
    pub ident: &'a syn::Ident,
    pub transparent: bool,
    pub fields: Vec<FieldPlan<'a>>,
}

pub enum Shape<'a> {
    /// A type tagged `#[layer]`: a leaf whose fields are not walked.
    Leaf {
        /// The field tagged `#[layer(expert_flag)]`, with its type.
        expert_flag: Option<(Member, &'a Type)>,
    },
    Struct(Vec<FieldPlan<'a>>),
    /// A struct whose walked fields are all flattened: no node of its own.
    Transparent(Vec<FieldPlan<'a>>),
    Enum(Vec<VariantPlan<'a>>),
}

pub struct Plan<'a> {
    pub type_name: String,
    pub layer: Option<Layer>,
    pub expert: Option<Expert>,
    pub register: bool,
    pub shape: Shape<'a>,
}

pub fn check<'a>(input: &Input<'a>, errors: &mut Errors) -> Option<Plan<'a>> {
    let attrs = &input.attrs;
    for misplaced in &attrs.misplaced {
        errors.at(
            misplaced.span,
            format!(
                "`{}` belongs on a field, not on the type; expected one of `crate`, `bound`, `register`",
                misplaced.value
            ),
        );
    }
    if let Some(span) = attrs.layer.expert_flag {
        errors.at(
            span,
            "`expert_flag` goes on the `bool` field that holds the flag, not on the type",
        );
    }
    if let Some(span) = attrs.layer.router {
        errors.at(
            span,
            "`router` is the role a field gives its layer; on a type write `#[layer(kind = \"router\")]`",
        );
    }
    let layer = attrs
        .layer
        .span
        .and_then(|span| layer(&attrs.layer, span, errors));
    let shape = match &input.data {
        Body::Union(span) => {
            errors.at(
                *span,
                "unions are not supported by `#[derive(ModuleTree)]`: a union has no fields to walk",
            );
            None
        }
        Body::Struct(fields) if attrs.layer.span.is_some() => {
            Some(leaf(fields.iter(), true, errors))
        }
        Body::Enum(variants) if attrs.layer.span.is_some() => {
            for variant in variants {
                variant_attrs(variant, errors);
            }
            let fields = variants.iter().flat_map(|variant| &variant.fields);
            Some(leaf(fields, false, errors))
        }
        Body::Struct(fields) => {
            let mut fields = struct_fields(fields, false, errors);
            // A wrapper whose every walked field is flattened (`Traced<T> { #[tree(flatten)]
            // inner: T, span }`) adds no node: its field stands in its place, own node included.
            let walked = || fields.iter().filter_map(|field| field.walked.as_ref());
            if walked().count() == 1 && walked().all(|walked| walked.flatten) {
                // The wrapper's own `#[expert]` goes to the field that stands in its place.
                let expert = attrs.expert.as_ref().map(|expert| expert.value);
                for field in &mut fields {
                    if let Some(walked) = &mut field.walked {
                        walked.flatten = false;
                        walked.expert = walked.expert.or(expert);
                    }
                }
                Some(Shape::Transparent(fields))
            } else {
                Some(Shape::Struct(fields))
            }
        }
        Body::Enum(variants) => Some(Shape::Enum(
            variants
                .iter()
                .map(|variant| {
                    variant_attrs(variant, errors);
                    let transparent = variant.style == Style::Tuple
                        && variant.fields.len() == 1
                        && !variant.fields[0].is_skipped();
                    VariantPlan {
                        ident: variant.ident,
                        transparent,
                        fields: struct_fields(&variant.fields, transparent, errors),
                    }
                })
                .collect(),
        )),
    };
    let plan = Plan {
        type_name: unraw(input.ident),
        layer,
        expert: attrs.expert.as_ref().map(|expert| expert.value),
        register: attrs
            .register
            .as_ref()
            .is_none_or(|register| register.value),
        shape: shape?,
    };
    if attrs.layer.span.is_some() && plan.layer.is_none() {
        return None;
    }
    Some(plan)
}

fn variant_attrs(variant: &Variant<'_>, errors: &mut Errors) {
    for misplaced in &variant.attrs.misplaced {
        errors.at(
            misplaced.span,
            format!(
                "`#[{}]` is not supported on an enum variant: a variant adds no node; put it on the variant's fields or on the enum",
                misplaced.value
            ),
        );
    }
}

/// The fields of a `#[layer]` type: not walked, so only `expert_flag` (and burn's marks) apply;
/// `expert_flag` only on a struct, whose one flag field every value has.
fn leaf<'f, 'a: 'f>(
    fields: impl Iterator<Item = &'f Field<'a>>,
    flag_allowed: bool,
    errors: &mut Errors,
) -> Shape<'a> {
    let mut expert_flag: Option<(Member, &'a Type)> = None;
    for field in fields {
        let attrs = &field.attrs;
        if let Some(span) = attrs.layer.expert_flag {
            if !flag_allowed {
                errors.at(
                    span,
                    "`expert_flag` is supported on a field of a struct, not of an enum variant: a variant that is not taken holds no flag",
                );
            } else if expert_flag.is_some() {
                errors.at(
                    span,
                    "duplicate `expert_flag`: a layer holds one expert flag",
                );
            } else {
                expert_flag = Some((field.member.clone(), field.ty));
            }
        }
        let ignored = [
            (
                attrs.layer.kind.as_ref().map(|kind| kind.span),
                "#[layer(kind)]",
            ),
            (attrs.layer.head, "#[layer(head)]"),
            (
                attrs.layer.parallel.as_ref().map(LitStr::span),
                "#[layer(parallel)]",
            ),
            (
                attrs.layer.parts.as_ref().map(|parts| parts.span),
                "#[layer(parts)]",
            ),
            (
                attrs.layer.expert_axis.as_ref().map(LitInt::span),
                "#[layer(expert_axis)]",
            ),
            (attrs.layer.router, "#[layer(router)]"),
            (attrs.flatten, "#[tree(flatten)]"),
            (attrs.expert.as_ref().map(|expert| expert.span), "#[expert]"),
            (attrs.skip, "#[tree(skip)]"),
            (attrs.rename.as_ref().map(LitStr::span), "#[tree(rename)]"),
            (attrs.layers, "#[tree(layers)]"),
        ];
        for (span, attribute) in ignored {
            if let Some(span) = span {
                errors.at(
                    span,
                    format!("`{attribute}` has no effect here: the fields of a `#[layer]` type are not walked"),
                );
            }
        }
    }
    Shape::Leaf { expert_flag }
}

fn struct_fields<'a>(
    fields: &[Field<'a>],
    transparent: bool,
    errors: &mut Errors,
) -> Vec<FieldPlan<'a>> {
    let mut seen: Vec<(Vec<String>, String)> = Vec::new();
    fields
        .iter()
        .map(|field| {
            let walked = walked(field, transparent, errors);
            if let Some(Walked {
                place: Place::Names(names),
                ..
            }) = &walked
            {
                let name = field.display_name();
                if let Some((_, first)) = seen.iter().find(|(path, _)| path == names) {
                    errors.at(
                        rename_or_name_span(field),
                        format!(
                            "fields `{first}` and `{name}` would both have the path `{}`; rename one with `#[tree(rename = \"...\")]`",
                            names.join(".")
                        ),
                    );
                } else {
                    seen.push((names.clone(), name));
                }
            }
            FieldPlan {
                member: field.member.clone(),
                ty: field.ty,
                walked,
            }
        })
        .collect()
}

fn walked(field: &Field<'_>, transparent: bool, errors: &mut Errors) -> Option<Walked> {
    let attrs = &field.attrs;
    if let Some(span) = attrs.layer.expert_flag {
        errors.at(
            span,
            "`expert_flag` marks the flag field of a `#[layer]` type; this type is not a layer",
        );
    }
    if let Some(skip) = attrs.skip {
        let combined = [
            (attrs.rename.as_ref().map(LitStr::span), "rename"),
            (attrs.layers, "layers"),
            (attrs.expert.as_ref().map(|expert| expert.span), "#[expert]"),
            (attrs.layer.span, "#[layer]"),
            (attrs.flatten, "flatten"),
        ];
        for (span, other) in combined {
            if let Some(span) = span {
                errors.at(
                    span,
                    format!("`skip` cannot be combined with `{other}`: a skipped field is not in the tree"),
                );
            }
        }
        let _ = skip;
        return None;
    }
    if attrs.burn_skip {
        return None;
    }
    if let Some(flatten) = attrs.flatten {
        let combined = [
            (
                attrs.rename.as_ref().map(LitStr::span),
                "rename",
                "a flattened field adds no segment to rename",
            ),
            (
                attrs.layers,
                "layers",
                "a flattened field adds no index of its own",
            ),
            (
                attrs.layer.span,
                "#[layer]",
                "a layer is a node of its own, which a flattened field does not have",
            ),
        ];
        for (span, other, why) in combined {
            if let Some(span) = span {
                errors.at(
                    span,
                    format!("`flatten` cannot be combined with `{other}`: {why}"),
                );
            }
        }
        let _ = flatten;
    }
    let place = match (&attrs.rename, &field.member) {
        (_, _) if attrs.flatten.is_some() => Place::Here,
        (Some(rename), _) => Place::Names(rename_segments(rename, errors)),
        (None, _) if transparent => Place::Here,
        (None, Member::Named(ident)) => Place::Names(vec![unraw(ident)]),
        (None, Member::Unnamed(index)) => Place::Index(index.index as usize),
    };
    // `#[layer(head)]` or `#[layer(router)]` alone on a field: roles of the node its type
    // reports, which keeps that type's walk (a delegated wrapper still reaches its inner layer).
    let roles_only = attrs.layer.kind.is_none()
        && !attrs.layer.invalid
        && (attrs.layer.head.is_some() || attrs.layer.router.is_some())
        && attrs.layer.parallel.is_none()
        && attrs.layer.parts.is_none()
        && attrs.layer.expert_axis.is_none();
    if let (Some(router), Some(_)) = (attrs.layer.router, attrs.layer.head) {
        errors.at(
            router,
            "a layer is an output head or a router, not both: keep `head` or `router`",
        );
    }
    if let (Some(router), Some(_)) = (attrs.layer.router, &attrs.layer.kind) {
        errors.at(
            router,
            "`router` is the role of a field whose type is a layer; with a kind, write `kind = \"router\"`",
        );
    }
    let layer = if roles_only {
        None
    } else {
        attrs
            .layer
            .span
            .and_then(|span| layer(&attrs.layer, span, errors))
    };
    Some(Walked {
        place,
        layer,
        expert: attrs.expert.as_ref().map(|expert| expert.value),
        layers: attrs.layers.is_some(),
        head: roles_only && attrs.layer.head.is_some(),
        router: roles_only && attrs.layer.router.is_some(),
        flatten: attrs.flatten.is_some(),
    })
}

fn rename_or_name_span(field: &Field<'_>) -> Span {
    match (&field.attrs.rename, &field.member) {
        (Some(rename), _) => rename.span(),
        (None, Member::Named(ident)) => ident.span(),
        (None, Member::Unnamed(_)) => syn::spanned::Spanned::span(field.ty),
    }
}

fn rename_segments(rename: &LitStr, errors: &mut Errors) -> Vec<String> {
    let value = rename.value();
    if value.is_empty() {
        errors.spanned(
            rename,
            "`rename` must not be empty: the field needs a path segment",
        );
        return vec![value];
    }
    let segments: Vec<String> = value.split('.').map(str::to_owned).collect();
    for segment in &segments {
        if segment.is_empty() {
            errors.spanned(
                rename,
                format!("`rename` holds an empty segment in \"{value}\": write segments joined by single dots"),
            );
        } else if segment.contains("<>") {
            errors.spanned(
                rename,
                format!("`rename` must not contain `<>` in \"{value}\": `<>` stands for an index in normalized paths"),
            );
        } else if let Some(special) = segment
            .chars()
            .find(|c| c.is_whitespace() || "*?^<>,:".contains(*c))
        {
            errors.spanned(
                rename,
                format!(
                    "`rename` segment \"{segment}\" holds {special:?}, which target entries read as syntax, so no entry could name it: write a segment without `*`, `?`, `^`, `<`, `>`, `,`, `:` or spaces"
                ),
            );
        } else if segment.bytes().all(|byte| byte.is_ascii_digit()) {
            errors.spanned(
                rename,
                format!("`rename` segment \"{segment}\" is all digits and would read as an index"),
            );
        }
    }
    segments
}
