//! The derive behind `moduletree`: `#[derive(ModuleTree)]`.
//!
//! Three stages, one job each: `ast` reads the input (with `attr` parsing the attributes),
//! `check` applies the rules that span several attributes or fields, and `expand` writes the
//! impl. Every user error is collected and reported at once; on error, `fallback` emits the
//! errors beside a stub impl so that one typo does not cascade. Nothing here panics on user input.

mod ast;
mod attr;
mod bound;
mod check;
mod errors;
mod expand;
mod fallback;
mod kinds;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `moduletree::ModuleTree`; see the `moduletree` crate for the attributes.
#[proc_macro_derive(ModuleTree, attributes(layer, expert, tree))]
pub fn derive_module_tree(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
