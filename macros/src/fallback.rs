//! On error: the errors, plus a stub impl so that one typo does not cascade into "`ModuleTree`
//! is not implemented" errors at every use of the type.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

pub fn stub(input: &DeriveInput, krate: &TokenStream, error: &syn::Error) -> TokenStream {
    let ident = &input.ident;
    let private = quote!(#krate::__private);
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let errors = error.to_compile_error();
    quote! {
        #errors

        #[automatically_derived]
        impl #impl_generics #private::ModuleTree for #ident #ty_generics #where_clause {
            const SCHEMA: #private::Schema = #private::Schema::NONE;

            fn walk<'__a>(&'__a self, _: &mut #private::Walker<'__a, '_>) {}

            fn walk_mut<'__a>(&'__a mut self, _: &mut #private::WalkerMut<'__a, '_>) {}
        }
    }
}
