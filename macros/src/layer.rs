//! The facts of a `#[layer]` attribute: its kind, its roles and its parallel facts (style,
//! packed parts, expert axis), checked together into a [`Layer`].

use proc_macro2::Span;

use crate::attr::{KindAttr, LayerAttr};
use crate::check::{Kind, Layer};
use crate::errors::Errors;
use crate::kinds::{self, KINDS, STYLES};

pub fn layer(attr: &LayerAttr, span: Span, errors: &mut Errors) -> Option<Layer> {
    let parallel = attr.parallel.as_ref().and_then(|lit| {
        let name = lit.value();
        let found = STYLES.iter().find(|(style, _)| *style == name);
        if found.is_none() {
            let hint = kinds::nearest(&name, STYLES.map(|(style, _)| style))
                .map(|near| format!("did you mean \"{near}\"? "))
                .unwrap_or_default();
            let expected = STYLES.map(|(style, _)| format!("\"{style}\"")).join(", ");
            errors.spanned(
                lit,
                format!("unknown `parallel` value \"{name}\"; {hint}expected one of {expected}"),
            );
        }
        found.map(|(name, variant)| (*name, *variant))
    });
    let Some(kind) = &attr.kind else {
        let flag_only = attr.expert_flag.is_some()
            && attr.head.is_none()
            && attr.router.is_none()
            && attr.parallel.is_none()
            && attr.parts.is_none()
            && attr.expert_axis.is_none();
        // `router` without a kind is reported on its own, where it stands.
        if !attr.invalid && !flag_only && attr.router.is_none() {
            errors.at(
                span,
                "`#[layer]` needs a kind: write `#[layer(kind = \"linear\")]` or `#[layer(custom = \"name\")]`",
            );
        }
        return None;
    };
    let kind = match &kind.value {
        KindAttr::Builtin(lit) => {
            let name = lit.value();
            if let Some(variant) = kinds::variant(&name) {
                Kind::Builtin(variant)
            } else {
                let expected = KINDS.map(|(kind, _)| format!("\"{kind}\"")).join(", ");
                let message = match kinds::nearest(&name, KINDS.map(|(kind, _)| kind)) {
                    Some(near) => {
                        format!("unknown layer kind \"{name}\"; did you mean \"{near}\"?")
                    }
                    None => format!(
                        "unknown layer kind \"{name}\"; expected one of {expected}, or `custom = \"{name}\"` for a kind of your own"
                    ),
                };
                errors.spanned(lit, message);
                return None;
            }
        }
        KindAttr::Custom(lit) => {
            let name = lit.value();
            if name.is_empty() {
                errors.spanned(lit, "`custom` kind must not be empty");
                return None;
            }
            if kinds::variant(&name).is_some() {
                errors.spanned(
                    lit,
                    format!("\"{name}\" is a built-in kind: write `kind = \"{name}\"`"),
                );
                return None;
            }
            Kind::Custom(name)
        }
    };
    let parts = parts(attr, parallel, errors);
    let expert_axis = expert_axis(attr, &kind, errors);
    style_fits_kind(attr, parallel, &kind, errors);
    Some(Layer {
        kind,
        head: attr.head.is_some(),
        parallel: parallel.map(|(_, variant)| variant),
        parts,
        expert_axis,
    })
}

/// `parts` belongs to a packed style and a packed style needs it: two or more sizes above zero.
fn parts(attr: &LayerAttr, parallel: Option<(&str, &str)>, errors: &mut Errors) -> Vec<u32> {
    let packed = parallel.filter(|(name, _)| name.starts_with("packed_"));
    let Some(parts) = &attr.parts else {
        if let (Some((name, _)), Some(lit), false) = (packed, &attr.parallel, attr.parts_invalid) {
            errors.spanned(
                lit,
                format!(
                    "`parallel = \"{name}\"` needs `parts`: the sizes or ratios of the fused projections, such as `parts = [1, 1]` for gate and up"
                ),
            );
        }
        return Vec::new();
    };
    if packed.is_none() && parallel.is_some() {
        errors.at(
            parts.span,
            "`parts` is for a packed layer: write `parallel = \"packed_column\"` or `parallel = \"packed_row\"`",
        );
    } else if parallel.is_none() {
        errors.at(
            parts.span,
            "`parts` needs a packed style: add `parallel = \"packed_column\"` or `parallel = \"packed_row\"`",
        );
    }
    if parts.sizes.len() < 2 {
        errors.at(
            parts.span,
            "`parts` needs at least two sizes: a packed layer fuses two or more projections",
        );
    }
    let mut sizes = Vec::new();
    for size in &parts.sizes {
        if !matches!(size.suffix(), "" | "u32") {
            errors.spanned(
                size,
                "a part size is a plain number, such as `1`: its type is `u32`",
            );
            continue;
        }
        match size.base10_parse::<u32>() {
            Ok(0) => errors.spanned(
                size,
                "a part of size 0 holds nothing: every part is at least 1",
            ),
            Ok(value) => sizes.push(value),
            Err(_) => errors.spanned(
                size,
                "a part size must be a whole number from 1 to 4294967295",
            ),
        }
    }
    sizes
}

/// `expert_axis` is for `grouped_linear`, whose weight has three axes.
fn expert_axis(attr: &LayerAttr, kind: &Kind, errors: &mut Errors) -> Option<u8> {
    let lit = attr.expert_axis.as_ref()?;
    if !matches!(kind, Kind::Builtin("GroupedLinear")) {
        errors.spanned(
            lit,
            "`expert_axis` is for `kind = \"grouped_linear\"`: only a fused expert weight has an expert axis",
        );
        return None;
    }
    match lit.base10_parse::<u8>() {
        Ok(axis @ 0..=2) => Some(axis),
        _ => {
            errors.spanned(
                lit,
                "`expert_axis` must be 0, 1 or 2: a grouped weight has three axes, experts and the two of each expert's matrix",
            );
            None
        }
    }
}

/// `vocab` is for embeddings; the splitting styles are for the linear family; `replicated` and
/// custom kinds take any style.
fn style_fits_kind(
    attr: &LayerAttr,
    parallel: Option<(&str, &str)>,
    kind: &Kind,
    errors: &mut Errors,
) {
    let (Some((name, _)), Some(lit)) = (parallel, &attr.parallel) else {
        return;
    };
    let Kind::Builtin(variant) = kind else {
        return;
    };
    let linear = matches!(*variant, "Linear" | "GroupedLinear" | "LayernormLinear");
    let fits = match name {
        "replicated" => true,
        "vocab" => *variant == "Embedding",
        _ => linear,
    };
    if !fits {
        let kind_name = KINDS
            .iter()
            .find(|(_, kind_variant)| kind_variant == variant)
            .map_or("", |(kind_name, _)| *kind_name);
        let expected = if name == "vocab" {
            "`kind = \"embedding\"`"
        } else {
            "a linear kind (`linear`, `grouped_linear`, `layernorm_linear`)"
        };
        errors.spanned(
            lit,
            format!(
                "`parallel = \"{name}\"` does not fit `kind = \"{kind_name}\"`: it is for {expected}; write `parallel = \"replicated\"` for a layer every rank holds whole"
            ),
        );
    }
}
