//! Which type parameters get a `ModuleTree` bound, and the user's `#[tree(bound = "...")]`.
//!
//! A type parameter is bounded when a walked field's type uses it (outside `PhantomData`); an
//! associated type of a parameter (`C::Layer`) is bounded itself, not its parameter. A
//! field tagged `#[layer]` is a leaf of any type: its type needs no impl, only `'static` so that a
//! mutable walk can hand it out as `Any` (for a borrowing field, the impl holds for `'static`
//! borrows). `#[tree(bound = "...")]` replaces the inferred bounds.

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
    if params.is_empty() && generics.lifetimes().next().is_none() {
        return Vec::new();
    }
    let fields: Vec<&FieldPlan<'_>> = match &plan.shape {
        Shape::Leaf { .. } => Vec::new(),
        Shape::Struct(fields) | Shape::Transparent(fields) => fields.iter().collect(),
        Shape::Enum(variants) => variants
            .iter()
            .flat_map(|variant| &variant.fields)
            .collect(),
    };
    let mut walked = BTreeSet::new();
    let mut projections: Vec<syn::TypePath> = Vec::new();
    let mut predicates = Vec::new();
    for field in fields {
        let Some(how) = &field.walked else { continue };
        let used = used_params(field.ty, &params);
        if how.layer.is_some() {
            if used.lifetimes || !used.params.is_empty() || !used.projections.is_empty() {
                let ty = field.ty;
                predicates.push(parse_quote!(#ty: 'static));
            }
        } else {
            walked.extend(used.params);
            projections.extend(used.projections);
        }
    }
    predicates.extend(
        walked
            .into_iter()
            .map(|param| -> WherePredicate { parse_quote!(#param: #krate::ModuleTree) }),
    );
    predicates.extend(
        projections
            .into_iter()
            .map(|projection| -> WherePredicate { parse_quote!(#projection: #krate::ModuleTree) }),
    );
    let mut seen = BTreeSet::new();
    predicates.retain(|predicate| seen.insert(quote!(#predicate).to_string()));
    predicates
}

/// What a field's type needs bounded.
#[derive(Default)]
struct Used {
    /// Type parameters the type mentions outside `PhantomData<...>`.
    params: BTreeSet<Ident>,
    /// Associated types of the parameters (`C::Layer`, `<C as Config>::Layer`): bounded as
    /// written, since the parameter itself need not be a module tree.
    projections: Vec<syn::TypePath>,
    /// Whether the type mentions a lifetime other than `'static`.
    lifetimes: bool,
}

fn used_params(ty: &Type, params: &BTreeSet<Ident>) -> Used {
    struct Finder<'p> {
        params: &'p BTreeSet<Ident>,
        used: Used,
    }

    impl Finder<'_> {
        fn mentions_param(&self, ty: &Type) -> bool {
            let mut inner = Finder {
                params: self.params,
                used: Used::default(),
            };
            inner.visit_type(ty);
            !inner.used.params.is_empty() || !inner.used.projections.is_empty()
        }
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
            let projection = match &ty.qself {
                Some(qself) => self.mentions_param(&qself.ty),
                None => {
                    ty.path.leading_colon.is_none()
                        && ty.path.segments.len() > 1
                        && self.params.contains(&ty.path.segments[0].ident)
                }
            };
            if projection {
                self.used.projections.push(ty.clone());
                return;
            }
            if ty.qself.is_none()
                && ty.path.leading_colon.is_none()
                && let Some(first) = ty.path.segments.first()
                && self.params.contains(&first.ident)
            {
                self.used.params.insert(first.ident.clone());
            }
            visit::visit_type_path(self, ty);
        }

        fn visit_lifetime(&mut self, lifetime: &'ast syn::Lifetime) {
            self.used.lifetimes |= lifetime.ident != "static";
        }

        fn visit_macro(&mut self, _: &'ast syn::Macro) {}
    }

    let mut finder = Finder {
        params,
        used: Used::default(),
    };
    finder.visit_type(ty);
    finder.used
}
