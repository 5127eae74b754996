//! Code generation: a plain, total function of a checked plan.
//!
//! The expansion stays thin: the schema, where each field's facts are written once (built from
//! the field types' `SCHEMA_REF`s, and kept in one `static` for a type without generic
//! parameters), and `walk` / `walk_mut`, which read those facts back from the schema and make one
//! call per field into the generic walker of `moduletree`. Everything reaches the runtime through
//! one path, `::moduletree::__private` (or `#[tree(crate = ...)]`).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{DeriveInput, Ident, Member, Type};

use crate::ast::{Input, unraw};
use crate::attr::Expert;
use crate::bound;
use crate::check::{self, FieldPlan, Kind, Layer, Place, Plan, Shape, VariantPlan, Walked};
use crate::errors::Errors;
use crate::fallback;

pub fn derive(input: &DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let parsed = Input::from_syn(input, &mut errors);
    let plan = check::check(&parsed, &mut errors);
    match (errors.finish(), plan) {
        (Ok(()), Some(plan)) => expand(&parsed, &plan),
        (Err(error), _) => fallback::stub(input, &krate(&parsed), &error),
        (Ok(()), None) => fallback::stub(
            input,
            &krate(&parsed),
            &syn::Error::new(
                Span::call_site(),
                "`#[derive(ModuleTree)]` could not read this type",
            ),
        ),
    }
}

pub fn krate(input: &Input<'_>) -> TokenStream {
    match &input.attrs.krate {
        Some(path) => quote!(#path),
        None => quote!(::moduletree),
    }
}

fn expand(input: &Input<'_>, plan: &Plan<'_>) -> TokenStream {
    let krate = krate(input);
    let private = quote!(#krate::__private);
    let ident = input.ident;
    let original = input.original;
    let user_bound = input
        .attrs
        .bound
        .as_ref()
        .map(|bound| bound.value.as_slice());
    let generics = bound::with_bounds(&original.generics, plan, user_bound, &krate);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let info = node_info(&private, &plan.type_name, plan.layer.as_ref(), plan.expert);
    let schema = schema(&private, &info, plan);
    let walk_shared = walk(&private, plan, false);
    let walk_mut = walk(&private, plan, true);
    let non_generic = original.generics.params.is_empty();
    // A type without generic parameters keeps its schema in one `static`, which the schemas of
    // the types that hold it point to (through `SCHEMA_REF`): the schema is evaluated and
    // emitted once, however many paths reach it. A generic type cannot have a `static`: its
    // schema is a constant and its `SCHEMA_REF` stays `&Self::SCHEMA`.
    let schema_items = if non_generic {
        quote! {
            const SCHEMA: #private::Schema = *<Self as #private::ModuleTree>::SCHEMA_REF;
            const SCHEMA_REF: &'static #private::Schema = {
                static __SCHEMA: #private::Schema = #schema;
                &__SCHEMA
            };
        }
    } else {
        quote!(const SCHEMA: #private::Schema = #schema;)
    };
    let as_any = non_generic.then(|| {
        quote! {
            #[inline]
            fn as_any(&self) -> #private::Option<&dyn #private::Any> {
                #private::Some(self)
            }

            #[inline]
            fn as_any_mut(&mut self) -> #private::Option<&mut dyn #private::Any> {
                #private::Some(self)
            }
        }
    });
    let expert_flag = match &plan.shape {
        Shape::Leaf {
            expert_flag: Some((member, ty)),
        } => {
            // Spanned on the field's type, so that a flag that is not a `bool` is reported there.
            let span = ty.span();
            let member = respan(member, span);
            let flag = quote_spanned!(span=> let __flag: &mut bool = &mut self.#member;);
            Some(quote! {
                #[inline]
                fn expert_flag_mut(&mut self) -> #private::Option<&mut bool> {
                    #flag
                    #private::Some(__flag)
                }
            })
        }
        _ => None,
    };
    let register = (non_generic && plan.register).then(|| {
        let name = &plan.type_name;
        quote! {
            #private::inventory::submit! {
                #private::Registration {
                    name: #name,
                    module_path: ::core::module_path!(),
                    schema: <#ident as #private::ModuleTree>::SCHEMA_REF,
                }
            }
        }
    });
    // `walk` and `walk_mut` are `#[inline]` in debug builds only: there they are then compiled
    // where a model is walked, not in every crate that derives (which halves the debug build of
    // many types); in release builds an `#[inline]` on every walk slowed a DeepSeek-V3-sized walk
    // by a fifth, so the compiler keeps its own choices.
    quote! {
        #[automatically_derived]
        impl #impl_generics #private::ModuleTree for #ident #ty_generics #where_clause {
            #schema_items

            #[cfg_attr(debug_assertions, inline)]
            fn walk<'__a>(&'__a self, __walker: &mut #private::Walker<'__a, '_>) {
                #walk_shared
            }

            #[cfg_attr(debug_assertions, inline)]
            fn walk_mut<'__a>(&'__a mut self, __walker: &mut #private::WalkerMut<'__a, '_>) {
                #walk_mut
            }

            #as_any
            #expert_flag
        }

        #register
    }
}

fn node_info(
    private: &TokenStream,
    type_name: &str,
    layer: Option<&Layer>,
    expert: Option<Expert>,
) -> TokenStream {
    let info = match layer {
        Some(layer) => {
            let kind = match &layer.kind {
                Kind::Builtin(variant) => {
                    let variant = Ident::new(variant, Span::call_site());
                    quote!(#private::Kind::#variant)
                }
                Kind::Custom(name) => quote!(#private::Kind::Custom(#name)),
            };
            let mut info = quote!(#private::NodeInfo::layer(#type_name, #kind));
            if layer.head {
                info = quote!(#info.head());
            }
            if let Some(parallel) = layer.parallel {
                let parallel = Ident::new(parallel, Span::call_site());
                info = quote!(#info.parallel(#private::Parallel::#parallel));
            }
            if !layer.parts.is_empty() {
                let parts = &layer.parts;
                info = quote!(#info.parts(&[#(#parts),*]));
            }
            if let Some(axis) = layer.expert_axis.filter(|axis| *axis != 0) {
                info = quote!(#info.expert_axis(#axis));
            }
            info
        }
        None => quote!(#private::NodeInfo::module(#type_name)),
    };
    with_expert(info, expert)
}

/// `facts.expert()` or `facts.shared_expert()` for `#[expert]` / `#[expert(shared)]`.
fn with_expert(facts: TokenStream, expert: Option<Expert>) -> TokenStream {
    match expert {
        None => facts,
        Some(Expert::Routed) => quote!(#facts.expert()),
        Some(Expert::Shared) => quote!(#facts.shared_expert()),
    }
}

fn field_info(private: &TokenStream, walked: &Walked, extra_expert: Option<Expert>) -> TokenStream {
    let mut field = match &walked.place {
        Place::Names(names) => quote!(#private::Field::named(&[#(#names),*])),
        Place::Index(index) => quote!(#private::Field::positional(#index)),
        Place::Here => quote!(#private::Field::NAMED),
    };
    field = with_expert(with_expert(field, walked.expert), extra_expert);
    if walked.layers {
        field = quote!(#field.layers());
    }
    if walked.head {
        field = quote!(#field.head());
    }
    if walked.router {
        field = quote!(#field.router());
    }
    if walked.flatten {
        field = quote!(#field.flatten());
    }
    field
}

/// The name a field-level layer reports: the last segment of its type's path, without `r#`;
/// other types as written, without the spaces that `to_string` puts between tokens.
fn type_name(ty: &Type) -> String {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map_or_else(String::new, |segment| unraw(&segment.ident)),
        Type::Group(group) => type_name(&group.elem),
        Type::Paren(paren) => type_name(&paren.elem),
        Type::Reference(reference) => type_name(&reference.elem),
        other => compact(&quote!(#other).to_string()),
    }
}

/// `text` without the spaces that do not separate two words (`dyn Send`, `* const T`).
pub(crate) fn compact(text: &str) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '\'';
    let chars: Vec<char> = text.chars().collect();
    chars
        .iter()
        .enumerate()
        .filter(|&(index, &c)| {
            c != ' '
                || (index > 0
                    && chars.get(index + 1).is_some_and(|&next| is_word(next))
                    && is_word(chars[index - 1]))
        })
        .map(|(_, &c)| c)
        .collect()
}

/// The leaf schemas of a type's fields tagged `#[layer]`, each distinct one written once, as a
/// constant of the schema's initializer: fields with the same facts (`q_proj`, `k_proj`, …)
/// share it. One constant per field cost a tenth of checking a crate of 200 modules.
#[derive(Default)]
struct LayerSchemas {
    /// Each distinct schema's expression, and its text (how they are told apart).
    schemas: Vec<(String, TokenStream)>,
}

impl LayerSchemas {
    /// The name of the constant holding `schema`.
    fn name(&mut self, schema: TokenStream) -> Ident {
        let text = schema.to_string();
        let index = match self.schemas.iter().position(|(known, _)| *known == text) {
            Some(index) => index,
            None => {
                self.schemas.push((text, schema));
                self.schemas.len() - 1
            }
        };
        format_ident!("__LAYER_SCHEMA_{}", index)
    }

    /// `schema` with the constants it names declared before it.
    fn around(&self, private: &TokenStream, schema: TokenStream) -> TokenStream {
        if self.schemas.is_empty() {
            return schema;
        }
        let constants = self.schemas.iter().enumerate().map(|(index, (_, layer))| {
            let name = format_ident!("__LAYER_SCHEMA_{}", index);
            quote!(const #name: &'static #private::Schema = &#private::Schema::layer(#layer);)
        });
        quote!({ #(#constants)* #schema })
    }
}

fn field_schemas<'f>(
    private: &TokenStream,
    fields: impl IntoIterator<Item = &'f FieldPlan<'f>>,
    extra_expert: Option<Expert>,
    layers: &mut LayerSchemas,
) -> TokenStream {
    let fields = fields.into_iter().filter_map(|field| {
        let walked = field.walked.as_ref()?;
        let info = field_info(private, walked, extra_expert);
        let ty = field.ty;
        Some(match &walked.layer {
            // The leaf's facts, written once: `layer_field` copies them into the field.
            Some(layer) => {
                let layer = layers.name(node_info(private, &type_name(ty), Some(layer), None));
                quote!(#private::layer_field(#info, #layer))
            }
            // Spanned on the field's type, so that a missing impl is reported there.
            None => {
                let schema = quote_spanned!(ty.span()=> <#ty as #private::ModuleTree>::SCHEMA_REF);
                quote!(#private::FieldSchema { field: #info, schema: #schema })
            }
        })
    });
    quote!(&[#(#fields),*])
}

fn schema(private: &TokenStream, info: &TokenStream, plan: &Plan<'_>) -> TokenStream {
    let mut layers = LayerSchemas::default();
    let (info, shape) = match &plan.shape {
        Shape::Leaf { .. } => (quote!(#private::Some(#info)), quote!(#private::Shape::Leaf)),
        Shape::Struct(fields) => {
            let fields = field_schemas(private, fields, None, &mut layers);
            (
                quote!(#private::Some(#info)),
                quote!(#private::Shape::Fields(#fields)),
            )
        }
        Shape::Transparent(fields) => {
            let fields = field_schemas(private, fields, None, &mut layers);
            (
                quote!(#private::None),
                quote!(#private::Shape::Fields(#fields)),
            )
        }
        Shape::Enum(variants) => {
            let variants = variants.iter().map(|variant| {
                let name = variant.ident.to_string();
                let transparent = variant.transparent;
                let fields = field_schemas(
                    private,
                    &variant.fields,
                    plan.expert.filter(|_| transparent),
                    &mut layers,
                );
                quote! {
                    #private::VariantSchema { name: #name, transparent: #transparent, fields: #fields }
                }
            });
            (
                quote!(#private::Some(#info)),
                quote!(#private::Shape::Variants(&[#(#variants),*])),
            )
        }
    };
    layers.around(
        private,
        quote!(#private::Schema { info: #info, shape: #shape }),
    )
}

/// `member` spanned at `span`, so that an error about a field's value points at the field.
fn respan(member: &Member, span: Span) -> Member {
    match member {
        Member::Named(ident) => {
            let mut ident = ident.clone();
            ident.set_span(span);
            Member::Named(ident)
        }
        Member::Unnamed(index) => Member::Unnamed(syn::Index {
            index: index.index,
            span,
        }),
    }
}

/// The schema this type's walk reads its facts from.
fn own_schema(private: &TokenStream) -> TokenStream {
    quote!(<Self as #private::ModuleTree>::SCHEMA_REF)
}

/// One call per walked field, with the field's facts read from the schema (`facts` is the
/// field's `&FieldSchema`): `field_with` for a subtree, `layer_field` for a field tagged
/// `#[layer]`.
fn field_call(
    private: &TokenStream,
    field: &FieldPlan<'_>,
    facts: &TokenStream,
    value: &TokenStream,
    mutable: bool,
) -> TokenStream {
    // Spanned on the field's type, so that a missing impl is reported there, not on the derive.
    // The walk is named as `<T as ModuleTree>::walk`, the same obligation at the same span as
    // the schema's `<T as ModuleTree>::SCHEMA_REF`: rustc then reports a missing impl once per
    // field, instead of once more for each of `walk` and `walk_mut`.
    let span = field.ty.span();
    let is_layer = field
        .walked
        .as_ref()
        .is_some_and(|walked| walked.layer.is_some());
    if is_layer {
        quote_spanned!(span=> __walker.layer_field(&#facts.field, #value);)
    } else {
        let ty = field.ty;
        let walk = if mutable {
            quote_spanned!(span=> <#ty as #private::ModuleTree>::walk_mut)
        } else {
            quote_spanned!(span=> <#ty as #private::ModuleTree>::walk)
        };
        quote_spanned! {span=>
            __walker.field_with(&#facts.field, #value, #walk);
        }
    }
}

fn walk(private: &TokenStream, plan: &Plan<'_>, mutable: bool) -> TokenStream {
    let own = own_schema(private);
    match &plan.shape {
        Shape::Leaf { .. } => quote!(__walker.layer(#private::info(#own), self);),
        Shape::Struct(fields) | Shape::Transparent(fields) => {
            let transparent = matches!(plan.shape, Shape::Transparent(_));
            let calls = fields
                .iter()
                .filter(|field| field.walked.is_some())
                .enumerate()
                .map(|(index, field)| {
                    let span = field.ty.span();
                    let member = respan(&field.member, span);
                    let value = if mutable {
                        quote_spanned!(span=> &mut self.#member)
                    } else {
                        quote_spanned!(span=> &self.#member)
                    };
                    field_call(private, field, &quote!(__fields[#index]), &value, mutable)
                });
            // Rules that need the fields' schemas, checked in constants: a flattened field holds
            // no layer and brings no name twice; a dotted rename takes no path another field
            // has; a role field holds a layer.
            let flattens = fields
                .iter()
                .any(|field| field.walked.as_ref().is_some_and(|walked| walked.flatten));
            let flatten_check = (flattens && !mutable).then(|| {
                quote!(const { #private::check_flattened(&<Self as #private::ModuleTree>::SCHEMA) };)
            });
            let role_checks = fields.iter().filter(|_| !mutable).filter_map(|field| {
                let walked = field.walked.as_ref()?;
                let ty = field.ty;
                let role = (walked.head || walked.router).then(|| {
                    quote_spanned!(ty.span()=> const { #private::check_role(&<#ty as #private::ModuleTree>::SCHEMA) };)
                });
                let layers = (walked.layers && walked.layer.is_none()).then(|| {
                    quote_spanned!(ty.span()=> const { #private::check_layers(&<#ty as #private::ModuleTree>::SCHEMA) };)
                });
                (role.is_some() || layers.is_some()).then(|| quote!(#role #layers))
            });
            // A dotted rename must not land on a path another field's type already has.
            let dotted = fields.iter().any(|field| {
                field.walked.as_ref().is_some_and(
                    |walked| matches!(&walked.place, Place::Names(names) if names.len() > 1),
                )
            });
            let dotted_check = (dotted && !mutable).then(|| {
                quote!(const { #private::check_dotted(&<Self as #private::ModuleTree>::SCHEMA) };)
            });
            let checks = quote!(#flatten_check #dotted_check #(#role_checks)*);
            let fields = quote!(let __fields = #private::fields(#own););
            if transparent {
                quote!(#checks #fields #(#calls)*)
            } else {
                quote! {
                    #checks
                    #fields
                    let __scope = __walker.enter_module(#private::info(#own), self);
                    #(#calls)*
                    __walker.exit_module(__scope);
                }
            }
        }
        Shape::Enum(variants) => walk_enum(private, variants, mutable),
    }
}

fn walk_enum(private: &TokenStream, variants: &[VariantPlan<'_>], mutable: bool) -> TokenStream {
    if variants.is_empty() {
        return quote!(match *self {});
    }
    let own = own_schema(private);
    let arm = |(position, variant): (usize, &VariantPlan<'_>)| {
        let ident = variant.ident;
        let bindings: Vec<Ident> = (0..variant.fields.len())
            .map(|index| format_ident!("__field{}", index))
            .collect();
        let pattern_fields = variant
            .fields
            .iter()
            .zip(&bindings)
            .filter(|(field, _)| field.walked.is_some())
            .map(|(field, binding)| {
                let member = &field.member;
                quote!(#member: #binding)
            });
        let calls = variant
            .fields
            .iter()
            .zip(&bindings)
            .filter(|(field, _)| field.walked.is_some())
            .enumerate()
            .map(|(index, (field, binding))| {
                let binding = Ident::new(&binding.to_string(), field.ty.span());
                let facts = quote!(__variants[#position].fields[#index]);
                field_call(private, field, &facts, &quote!(#binding), mutable)
            });
        quote!(Self::#ident { #(#pattern_fields,)* .. } => { #(#calls)* })
    };
    let transparent: Vec<TokenStream> = variants
        .iter()
        .enumerate()
        .filter(|(_, v)| v.transparent)
        .map(arm)
        .collect();
    let modules: Vec<TokenStream> = variants
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.transparent)
        .map(arm)
        .collect();
    let rest_of_transparent = (!transparent.is_empty()).then(|| quote!(_ => {}));
    let module_arm = (!modules.is_empty()).then(|| {
        quote! {
            _ => {
                let __scope = __walker.enter_module(#private::info(#own), self);
                match self {
                    #(#modules)*
                    #rest_of_transparent
                }
                __walker.exit_module(__scope);
            }
        }
    });
    quote! {
        let __variants = #private::variants(#own);
        match self {
            #(#transparent)*
            #module_arm
        }
    }
}
