//! What resolving a spec reports: the selected layers ([`Resolution`]), per-entry counts, the
//! warnings, and the errors that tell apart why an entry cannot be right.

use core::fmt;
use std::sync::Arc;

use crate::kind::Kind;

/// One selected layer, owned: what an adapter needs to wrap it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedLayer {
    /// The path joined by `.` (`model.layers.3.self_attn.q_proj`), as PEFT names modules.
    pub path: String,
    /// The path with every index as `<>`, shared by the layers that have it.
    pub normalized: Arc<str>,
    /// The layer's kind.
    pub kind: Kind,
    /// Whether the layer is a routed expert (see [`Node::is_expert`](crate::Node::is_expert)).
    pub is_expert: bool,
    /// The layer index (see [`Node::layer_index`](crate::Node::layer_index)).
    pub layer_index: Option<usize>,
    /// The LoRA rank after rank patterns.
    pub rank: u32,
    /// The LoRA alpha after alpha patterns.
    pub alpha: f64,
}

/// What one entry matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryReport {
    /// The entry as written (its [`Display`](fmt::Display) form).
    pub entry: String,
    /// Layers it selected.
    pub selected: usize,
    /// Layers it matched that an exclusion removed.
    pub excluded: usize,
    /// Layers it matched that the layer filter removed.
    pub filtered: usize,
    /// Modules and containers it matched (never selected).
    pub non_layers: usize,
}

/// The result of resolving a spec; read with accessors, as a walked [`Node`](crate::Node) and a
/// [`NamedModule`](crate::NamedModule) are.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    pub(crate) layers: Vec<ResolvedLayer>,
    pub(crate) entries: Vec<EntryReport>,
    pub(crate) warnings: Vec<TargetWarning>,
    pub(crate) rank: u32,
    pub(crate) alpha: f64,
}

impl Resolution {
    /// The selected layers, in walk order, each once.
    #[must_use]
    pub fn layers(&self) -> &[ResolvedLayer] {
        &self.layers
    }

    /// The selected layers, owned.
    #[must_use]
    pub fn into_layers(self) -> Vec<ResolvedLayer> {
        self.layers
    }

    /// The selected paths, in walk order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|layer| layer.path.as_str())
    }

    /// One report per entry, in the spec's order: what each selected, and what exclusions, the
    /// layer filter and non-layer matches took from it (an optional entry that matched nothing
    /// shows here with no selection).
    #[must_use]
    pub fn entries(&self) -> &[EntryReport] {
        &self.entries
    }

    /// What deserves a look but did not stop the resolution, every warning in one place (each
    /// an error in [strict mode](crate::target::TargetSpec::strict)). Print them: nothing else
    /// does.
    #[must_use]
    pub fn warnings(&self) -> &[TargetWarning] {
        &self.warnings
    }

    /// The spec's default rank.
    #[must_use]
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// The spec's default alpha.
    #[must_use]
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

/// Something a resolution noticed that may be a mistake.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetWarning {
    /// The entry selected layers but also matched modules or containers, which it skipped.
    #[error(
        "target `{entry}` also matches {count} node(s) that are not layers, skipped (e.g. {})",
        quoted(examples)
    )]
    NonLayerMatches {
        /// The entry.
        entry: String,
        /// How many non-layer nodes it matched.
        count: usize,
        /// Some of their paths.
        examples: Vec<String>,
    },
    /// Every layer the entry matched lies outside the layer filter.
    #[error("target `{entry}` matches {filtered} layer(s), none in the selected layers")]
    LayerFiltered {
        /// The entry.
        entry: String,
        /// How many layers the filter removed.
        filtered: usize,
    },
    /// Every layer the entry matched was excluded (an error, except in a spec read from a PEFT
    /// config, where PEFT saves excluded modules in `target_modules`).
    #[error("target `{entry}` matches {excluded} layer(s), all excluded")]
    AllExcluded {
        /// The entry.
        entry: String,
        /// How many layers exclusions removed.
        excluded: usize,
    },
    /// An exclusion that removed nothing.
    #[error("exclusion `{pattern}` excludes no selected layer")]
    UnusedExclusion {
        /// The exclusion.
        pattern: String,
    },
    /// A rank pattern that matched no selected layer.
    #[error("rank pattern `{pattern}` matches no selected layer")]
    UnusedRankPattern {
        /// The pattern.
        pattern: String,
    },
    /// An alpha pattern that matched no selected layer.
    #[error("alpha pattern `{pattern}` matches no selected layer")]
    UnusedAlphaPattern {
        /// The pattern.
        pattern: String,
    },
}

/// Why an entry, or the spec, cannot be right.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The entry matched no node at all.
    #[error("target `{entry}` matches no module{}", suggestion_text(suggestions))]
    NoMatch {
        /// The entry.
        entry: String,
        /// Up to three nearest existing names or suffixes.
        suggestions: Vec<String>,
    },
    /// The entry matched only modules or containers, which cannot be adapted.
    #[error(
        "target `{entry}` matches only modules or containers, not layers (e.g. {}){}",
        quoted(matched),
        inside_text(layers_inside)
    )]
    NotALayer {
        /// The entry.
        entry: String,
        /// Some of the nodes it matched.
        matched: Vec<String>,
        /// The adaptable layers inside them, as suffixes relative to them: at most 8 are listed,
        /// and a ninth says there are more.
        layers_inside: Vec<String>,
    },
    /// Every layer the entry matched was excluded.
    #[error(
        "target `{entry}` matches {excluded} layer(s), all excluded by {}",
        quoted(by)
    )]
    AllExcluded {
        /// The entry.
        entry: String,
        /// How many layers it matched.
        excluded: usize,
        /// The exclusions that removed them.
        by: Vec<String>,
    },
    /// The default rank or alpha, or a rank or alpha pattern's value, is invalid: a rank of 0
    /// or an alpha that is not finite.
    #[error("{what} is invalid: a rank is at least 1 and an alpha is finite")]
    InvalidSettings {
        /// Which setting, and its value.
        what: String,
    },
    /// The spec has no entry, or selected no layer at all.
    #[error("the target spec selects no layer")]
    EmptySelection,
    /// The layer filter removed every layer the entries matched.
    #[error(
        "the layer filter ({filter}) keeps none of the layers the targets match; {}",
        existing_text(existing)
    )]
    FilteredOut {
        /// The filter, in words.
        filter: String,
        /// The layer indices the matched layers have, as the filter reads them.
        existing: Vec<usize>,
    },
    /// A warning, made an error by strict mode.
    #[error("{0} (strict mode)")]
    Strict(TargetWarning),
}

fn existing_text(existing: &[usize]) -> String {
    if existing.is_empty() {
        "no matched layer has a layer index where the filter reads it (does `layers_pattern` name a module of the model?)".to_owned()
    } else {
        format!("the layer indices that exist are {existing:?}")
    }
}

/// Everything wrong with a resolution, reported at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(errors))]
pub struct ResolveError {
    /// The errors, entries in the spec's order first.
    pub errors: Vec<TargetError>,
}

pub(crate) fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("`{}`", crate::display::one_line(item)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn suggestion_text(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", or_list(suggestions))
    }
}

fn or_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|item| format!("`{}`", crate::display::one_line(item)))
        .collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// How many layers inside a matched container an error lists; one more is kept, to say so.
pub(crate) const LAYERS_INSIDE: usize = 8;

fn inside_text(layers: &[String]) -> String {
    match layers.split_at_checked(LAYERS_INSIDE) {
        _ if layers.is_empty() => "; they hold no layer".to_owned(),
        Some((listed, more)) if !more.is_empty() => {
            format!("; the layers inside include {}, …", quoted(listed))
        }
        _ => format!("; the layers inside are {}", quoted(layers)),
    }
}

fn lines(errors: &[TargetError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for Resolution {
    /// One selected path per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for layer in &self.layers {
            writeln!(f, "{}", layer.path)?;
        }
        Ok(())
    }
}
