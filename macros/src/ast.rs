//! The input model, borrowed from syn: each node keeps its syn original so that every later
//! error has a span.

use proc_macro2::Span;
use syn::{Data, DeriveInput, Fields, Ident, Member, Type};

use crate::attr::{self, ContainerAttrs, FieldAttrs, VariantAttrs};
use crate::errors::Errors;

pub struct Input<'a> {
    pub original: &'a DeriveInput,
    pub ident: &'a Ident,
    pub attrs: ContainerAttrs,
    pub data: Body<'a>,
}

pub enum Body<'a> {
    Struct(Vec<Field<'a>>),
    Enum(Vec<Variant<'a>>),
    /// A union: reported by `check`, never expanded.
    Union(Span),
}

pub struct Variant<'a> {
    pub ident: &'a Ident,
    pub style: Style,
    pub fields: Vec<Field<'a>>,
    pub attrs: VariantAttrs,
}

/// How a struct or variant writes its fields.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Named,
    Tuple,
    Unit,
}

pub struct Field<'a> {
    pub member: Member,
    pub ty: &'a Type,
    pub attrs: FieldAttrs,
}

impl<'a> Input<'a> {
    pub fn from_syn(original: &'a DeriveInput, errors: &mut Errors) -> Self {
        let attrs = attr::container(&original.attrs, errors);
        let data = match &original.data {
            Data::Struct(data) => Body::Struct(fields(&data.fields, errors)),
            Data::Enum(data) => Body::Enum(
                data.variants
                    .iter()
                    .map(|variant| Variant {
                        ident: &variant.ident,
                        style: style(&variant.fields),
                        fields: fields(&variant.fields, errors),
                        attrs: attr::variant(&variant.attrs),
                    })
                    .collect(),
            ),
            Data::Union(data) => Body::Union(data.union_token.span),
        };
        Input {
            original,
            ident: &original.ident,
            attrs,
            data,
        }
    }
}

impl Field<'_> {
    /// Whether the field is left out of the tree (`#[tree(skip)]` or burn's `#[module(skip)]`).
    pub fn is_skipped(&self) -> bool {
        self.attrs.skip.is_some() || self.attrs.burn_skip
    }

    /// The field's name for messages: its identifier without `r#`, or its position.
    pub fn display_name(&self) -> String {
        match &self.member {
            Member::Named(ident) => unraw(ident),
            Member::Unnamed(index) => index.index.to_string(),
        }
    }
}

/// An identifier as text, without the `r#` of a raw identifier.
pub fn unraw(ident: &Ident) -> String {
    let text = ident.to_string();
    match text.strip_prefix("r#") {
        Some(stripped) => stripped.to_owned(),
        None => text,
    }
}

fn style(fields: &Fields) -> Style {
    match fields {
        Fields::Named(_) => Style::Named,
        Fields::Unnamed(_) => Style::Tuple,
        Fields::Unit => Style::Unit,
    }
}

fn fields<'a>(fields: &'a Fields, errors: &mut Errors) -> Vec<Field<'a>> {
    fields
        .iter()
        .enumerate()
        .map(|(index, original)| Field {
            member: match &original.ident {
                Some(ident) => Member::Named(ident.clone()),
                None => Member::Unnamed(syn::Index {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    span: Span::call_site(),
                }),
            },
            ty: &original.ty,
            attrs: attr::field(&original.attrs, errors),
        })
        .collect()
}
