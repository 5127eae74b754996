//! Which type parameters get a `ModuleTree` bound, and the user's `#[tree(bound = "...")]`.
//!
//! A type parameter is bounded when a walked field's type uses it (outside `PhantomData`). A
//! field tagged `#[layer]` is a leaf of any type: its type needs no impl, only `'static` so that a
//! mutable walk can hand it out as `Any`. `#[tree(bound = "...")]` replaces the inferred bounds.

use std::collections::BTreeSet;

use proc_macro2::TokenStream;
use quote::quote;
use syn::visit::{self, Visit};
use syn::{Generics, Ident, Type, WherePredicate, parse_quote};

use crate::check::{FieldPlan, Plan, Shape};

/// The generics of the impl, with the inferred (or the user's) bounds added to the where clause.
pub fn with_bounds(
    generics: &Generics,
    plan: &Plan<'_>,
    user_bound: Option<&[WherePredicate]>,
    krate: &TokenStream,
) -> Generics {
    let mut generics = generics.clone();
    let predicates: Vec<WherePredicate> = match user_bound {
        Some(bound) => bound.to_vec(),
        None => inferred(&generics, plan, krate),
    };
    generics.make_where_clause().predicates.extend(predicates);
    generics
}

fn inferred(generics: &Generics, plan: &Plan<'_>, krate: &TokenStream) -> Vec<WherePredicate> {
    let params: BTreeSet<Ident> = generics
        .type_params()
        .map(|param| param.ident.clone())
        .collect();
    if params.is_empty() {
        return Vec::new();
    }
    let fields: Vec<&FieldPlan<'_>> = match &plan.shape {
        Shape::Leaf { .. } => Vec::new(),
        Shape::Struct(fields) => fields.iter().collect(),
        Shape::Enum(variants) => variants
            .iter()
            .flat_map(|variant| &variant.fields)
            .collect(),
    };
    let mut walked = BTreeSet::new();
    let mut predicates = Vec::new();
    for field in fields {
        let Some(how) = &field.walked else { continue };
        let used = used_params(field.ty, &params);
        if how.layer.is_some() {
            if !used.is_empty() {
                let ty = field.ty;
                predicates.push(parse_quote!(#ty: 'static));
            }
        } else {
            walked.extend(used);
        }
    }
    predicates.extend(
        walked
            .into_iter()
            .map(|param| -> WherePredicate { parse_quote!(#param: #krate::ModuleTree) }),
    );
    predicates.dedup_by(|left, right| quote!(#left).to_string() == quote!(#right).to_string());
    predicates
}

/// The type parameters that `ty` mentions outside `PhantomData<...>`.
fn used_params(ty: &Type, params: &BTreeSet<Ident>) -> BTreeSet<Ident> {
    struct Finder<'p> {
        params: &'p BTreeSet<Ident>,
        used: BTreeSet<Ident>,
    }

    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_type_path(&mut self, ty: &'ast syn::TypePath) {
            let is_phantom = ty
                .path
                .segments
                .last()
                .is_some_and(|segment| segment.ident == "PhantomData");
            if is_phantom {
                return;
            }
            if ty.qself.is_none()
                && let Some(first) = ty.path.segments.first()
                && self.params.contains(&first.ident)
            {
                self.used.insert(first.ident.clone());
            }
            visit::visit_type_path(self, ty);
        }

        fn visit_macro(&mut self, _: &'ast syn::Macro) {}
    }

    let mut finder = Finder {
        params,
        used: BTreeSet::new(),
    };
    finder.visit_type(ty);
    finder.used
}
