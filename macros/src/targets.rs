//! `targets!`: each entry checked against the type's schema in a constant of its own, spanned on
//! the entry, so a failed check points at the entry that is wrong.
//!
//! The public `moduletree::targets!` is a `macro_rules!` macro that passes `$crate` here, so the
//! expansion reaches the runtime through the crate that defined it, whatever the user imported.

use proc_macro2::{TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Lit, Token, Type};

/// `$crate ; Type : "entry", "entry", …`
struct Input {
    krate: TokenStream,
    model: Type,
    entries: Punctuated<Lit, Token![,]>,
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let krate = input.step(|cursor| {
            let mut tokens = TokenStream::new();
            let mut rest = *cursor;
            while let Some((tree, next)) = rest.token_tree() {
                if let TokenTree::Punct(punct) = &tree
                    && punct.as_char() == ';'
                {
                    return Ok((tokens, next));
                }
                tokens.extend([tree]);
                rest = next;
            }
            Err(cursor.error("expected `;` after the crate path"))
        })?;
        let model = input.parse()?;
        input.parse::<Token![:]>()?;
        let entries = Punctuated::parse_terminated(input)?;
        Ok(Input {
            krate,
            model,
            entries,
        })
    }
}

pub fn expand(input: TokenStream) -> TokenStream {
    let Input {
        krate,
        model,
        entries,
    } = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let mut checks = TokenStream::new();
    let mut texts = Vec::new();
    for entry in &entries {
        let Lit::Str(text) = entry else {
            checks.extend(
                syn::Error::new_spanned(
                    entry,
                    "a target entry is a string literal, such as \"q_proj\"",
                )
                .to_compile_error(),
            );
            continue;
        };
        // Every token of the call but the crate path and the type carries the entry's span, so
        // the failed evaluation points at the entry.
        // The type as written, without the spaces `stringify!` puts between its tokens
        // (`cf::Gen<cf::Linear>`, not `cf :: Gen < cf :: Linear >`).
        let name = crate::expand::compact(&quote!(#model).to_string());
        let check = quote_spanned! {text.span()=>
            const _: () = (#krate::target::checked::check_target)(
                &<#model as #krate::ModuleTree>::SCHEMA,
                #text,
                #name,
            );
        };
        checks.extend(check);
        texts.push(text);
    }
    quote! {{
        #checks
        #krate::target::TargetSpec::__checked(&[#(#texts),*])
    }}
}
