//! Resolving a spec against a model or a static schema: which layers it selects, and why not.
//!
//! One walk matches every node against every entry; exclusions are checked before the layer
//! filter, and only leaf layers are selected. The result lists the selected layers in walk order
//! with their rank and alpha, how many nodes each entry matched and what became of them, and the
//! warnings. Entries that cannot be right are errors, told apart: matched nothing (with the
//! nearest names), matched only modules or containers (with the layers inside), or had every
//! match excluded. A second walk, only on error, gathers the suggestions. The spec is not changed.

use std::collections::HashSet;

use crate::find::SharedNormalized;
use crate::path::{JoinedPath, Path, Segment, push_path};
use crate::target::pattern::{Pattern, PatternKind, PatternSegment};
use crate::target::report::{
    EntryReport, LAYERS_INSIDE, Resolution, ResolveError, ResolvedLayer, TargetError, TargetWarning,
};
use crate::target::spec::{LayerFilter, TargetSpec};
use crate::target::suggest;
use crate::walk::{Node, Walk, walk};

/// The `excluded_by` mark of a layer left out because it lies in a module saved whole.
const SAVED_MODULE: usize = usize::MAX;
/// How many example paths an error or warning lists.
const EXAMPLES: usize = 3;

#[derive(Default)]
struct Tally {
    selected: usize,
    excluded: usize,
    filtered: usize,
    non_layers: usize,
    non_layer_examples: Vec<String>,
    excluded_by: Vec<usize>,
}

impl TargetSpec {
    /// Resolves the spec against `model`, a [`ModuleTree`](crate::ModuleTree) value or a static
    /// [`Schema`](crate::Schema) (whose containers show as `<>`).
    ///
    /// # Errors
    ///
    /// A [`ResolveError`] listing every entry that matched nothing, matched only non-layers, or
    /// had all its matches excluded; an empty selection; and, in strict mode, every warning.
    pub fn resolve<T: Walk + ?Sized>(&self, model: &T) -> Result<Resolution, ResolveError> {
        let needs_joined = self.entries.iter().any(Pattern::needs_joined_path)
            || self.exclusions.iter().any(Pattern::needs_joined_path)
            || self.saved_modules.iter().any(Pattern::needs_joined_path)
            || self.rank_pattern.iter().any(|(p, _)| p.needs_joined_path())
            || self
                .alpha_pattern
                .iter()
                .any(|(p, _)| p.needs_joined_path())
            || self
                .layers
                .as_ref()
                .is_some_and(LayerFilter::needs_joined_path);
        let mut tallies: Vec<Tally> = self.entries.iter().map(|_| Tally::default()).collect();
        let mut hits = vec![false; self.entries.len()];
        let mut exclusion_used = vec![false; self.exclusions.len()];
        let mut rank_used = vec![false; self.rank_pattern.len()];
        let mut alpha_used = vec![false; self.alpha_pattern.len()];
        let mut layers = Vec::new();
        // The layer indices of the layers the filter removed, for an error that lists them.
        let mut existing = std::collections::BTreeSet::new();
        let mut normalized = SharedNormalized::default();
        let mut path = JoinedPath::default();
        // How many leading segments every node since the last selected layer shares with it:
        // the paths kept for layers only are then updated from there, not compared whole.
        let mut unchanged_since_layer = usize::MAX;
        walk(model, |node| {
            unchanged_since_layer = unchanged_since_layer.min(node.unchanged_prefix());
            if needs_joined {
                path.update(node.path().segments(), node.unchanged_prefix());
            }
            let joined = if needs_joined { path.text.as_str() } else { "" };
            let mut any = false;
            for (hit, entry) in hits.iter_mut().zip(&self.entries) {
                *hit = entry.matches_with(node, joined);
                any |= *hit;
            }
            if !any {
                return;
            }
            let Some(kind) = node.kind() else {
                for tally in hit_tallies(&mut tallies, &hits) {
                    tally.non_layers += 1;
                    if tally.non_layer_examples.len() < EXAMPLES {
                        tally.non_layer_examples.push(node.path().to_string());
                    }
                }
                return;
            };
            if self.in_saved_module(node.path().segments(), joined) {
                for tally in hit_tallies(&mut tallies, &hits) {
                    tally.excluded += 1;
                    if !tally.excluded_by.contains(&SAVED_MODULE) {
                        tally.excluded_by.push(SAVED_MODULE);
                    }
                }
                return;
            }
            // A layer a `target_parameters` entry selects is adapted whatever `exclude_modules`
            // and `layers_to_transform` say, as PEFT's `_inject_parameters`
            // (`peft/tuners/tuners_utils.py`) checks neither, even when a `target_modules` name
            // matches it too.
            let by_parameter = hits
                .iter()
                .zip(&self.entries)
                .any(|(hit, entry)| *hit && entry.is_parameter());
            let excluded = if by_parameter {
                None
            } else {
                match self
                    .exclusions
                    .iter()
                    .position(|e| e.matches_with(node, joined))
                {
                    Some(by) => Some(by),
                    None => self.excluded_by(node.path().segments(), joined),
                }
            };
            if let Some(by) = excluded {
                exclusion_used[by] = true;
                for tally in hit_tallies(&mut tallies, &hits) {
                    tally.excluded += 1;
                    if !tally.excluded_by.contains(&by) {
                        tally.excluded_by.push(by);
                    }
                }
                return;
            }
            if let Some(filter) = &self.layers
                && !by_parameter
                && !filter.keeps_with(node, joined)
            {
                for tally in hit_tallies(&mut tallies, &hits) {
                    tally.filtered += 1;
                }
                existing.extend(filter.index_of(node, joined));
                return;
            }
            for tally in hit_tallies(&mut tallies, &hits) {
                tally.selected += 1;
            }
            let path_len = node.path().segments().len();
            let rank = best(&self.rank_pattern, node, joined, path_len, &mut rank_used)
                .unwrap_or(self.rank);
            let alpha = best(&self.alpha_pattern, node, joined, path_len, &mut alpha_used)
                .unwrap_or(self.alpha);
            let joined = if needs_joined {
                joined.to_owned()
            } else {
                path.update(node.path().segments(), unchanged_since_layer);
                path.text.clone()
            };
            let unchanged = core::mem::replace(&mut unchanged_since_layer, usize::MAX);
            layers.push(ResolvedLayer {
                path: joined,
                normalized: normalized.get(node.path().segments(), unchanged),
                kind,
                is_expert: node.is_expert(),
                layer_index: node.layer_index(),
                rank,
                alpha,
            });
        });
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut unmatched = Vec::new();
        errors.extend(
            self.invalid_settings()
                .map(|what| (usize::MAX, TargetError::InvalidSettings { what })),
        );
        let mut containers = Vec::new();
        for (position, (entry, tally)) in self.entries.iter().zip(&tallies).enumerate() {
            let text = entry.to_string();
            if tally.selected > 0 {
                if tally.non_layers > 0 {
                    warnings.push(TargetWarning::NonLayerMatches {
                        entry: text,
                        count: tally.non_layers,
                        examples: tally.non_layer_examples.clone(),
                    });
                }
            } else if tally.excluded > 0 && self.excluded_entries_warn {
                warnings.push(TargetWarning::AllExcluded {
                    entry: text,
                    excluded: tally.excluded,
                });
            } else if tally.excluded > 0 {
                errors.push((
                    position,
                    TargetError::AllExcluded {
                        entry: text,
                        excluded: tally.excluded,
                        by: tally
                            .excluded_by
                            .iter()
                            .map(|&by| match self.exclusions.get(by) {
                                Some(exclusion) => exclusion.to_string(),
                                None => "modules_to_save".to_owned(),
                            })
                            .collect(),
                    },
                ));
            } else if tally.filtered > 0 {
                warnings.push(TargetWarning::LayerFiltered {
                    entry: text,
                    filtered: tally.filtered,
                });
            } else if tally.non_layers > 0 {
                containers.push((position, text, tally.non_layer_examples.clone()));
            } else if !entry.is_optional() {
                unmatched.push((position, text, suggestion_length(entry)));
            }
        }
        if !unmatched.is_empty() || !containers.is_empty() {
            let mut found = explain(model, &unmatched, &containers);
            // A bare `target_parameters` name that names a linear (`q_proj`) selects no bank;
            // PEFT names that linear's weight `q_proj.weight`.
            for (position, error) in &mut found {
                if let TargetError::NoMatch { entry, suggestions } = error
                    && let Some(module) = self.entries[*position].bank_name_as_module()
                {
                    let mut names_a_layer = false;
                    walk(model, |node| {
                        names_a_layer |= node.kind().is_some() && module.matches_with(node, "");
                    });
                    if names_a_layer {
                        *suggestions = vec![format!("{entry}.weight")];
                    }
                }
            }
            errors.extend(found);
        }
        errors.sort_by_key(|(position, _)| *position);
        let mut errors: Vec<TargetError> = errors.into_iter().map(|(_, error)| error).collect();
        for (used, exclusion) in exclusion_used.iter().zip(&self.exclusions) {
            if !used {
                warnings.push(TargetWarning::UnusedExclusion {
                    pattern: exclusion.to_string(),
                });
            }
        }
        for (used, (pattern, _)) in rank_used.iter().zip(&self.rank_pattern) {
            if !used {
                warnings.push(TargetWarning::UnusedRankPattern {
                    pattern: pattern.to_string(),
                });
            }
        }
        for (used, (pattern, _)) in alpha_used.iter().zip(&self.alpha_pattern) {
            if !used {
                warnings.push(TargetWarning::UnusedAlphaPattern {
                    pattern: pattern.to_string(),
                });
            }
        }
        if layers.is_empty() && errors.is_empty() {
            match &self.layers {
                Some(filter) if tallies.iter().any(|tally| tally.filtered > 0) => {
                    errors.push(TargetError::FilteredOut {
                        filter: filter.describe(),
                        existing: existing.into_iter().collect(),
                    });
                }
                _ => errors.push(TargetError::EmptySelection),
            }
        }
        if self.strict {
            errors.extend(warnings.iter().cloned().map(TargetError::Strict));
        }
        if errors.is_empty() {
            Ok(Resolution {
                layers,
                entries: self
                    .entries
                    .iter()
                    .zip(tallies)
                    .map(|(entry, tally)| EntryReport {
                        entry: entry.to_string(),
                        selected: tally.selected,
                        excluded: tally.excluded,
                        filtered: tally.filtered,
                        non_layers: tally.non_layers,
                    })
                    .collect(),
                warnings,
                rank: self.rank,
                alpha: self.alpha,
            })
        } else {
            Err(ResolveError { errors })
        }
    }
}

fn hit_tallies<'t>(
    tallies: &'t mut [Tally],
    hits: &'t [bool],
) -> impl Iterator<Item = &'t mut Tally> {
    tallies
        .iter_mut()
        .zip(hits)
        .filter_map(|(tally, hit)| hit.then_some(tally))
}

/// The value of the most specific matching pattern (the first among equals), marking it used.
fn best<V: Copy>(
    patterns: &[(Pattern, V)],
    node: &Node<'_, '_>,
    joined: &str,
    path_len: usize,
    used: &mut [bool],
) -> Option<V> {
    let position = Pattern::most_specific(patterns, path_len, |pattern| {
        pattern.matches_with(node, joined)
    })?;
    used[position] = true;
    Some(patterns[position].1)
}

/// The parameter names a target entry may end with by mistake: a layer's own tensors.
const PARAMETER_NAMES: [&str; 2] = [".weight", ".bias"];

/// The second walk, on error only: suggestions for the entries that matched nothing, and the
/// layers inside the nodes matched by the entries that matched only non-layers.
fn explain<T: Walk + ?Sized>(
    model: &T,
    unmatched: &[(usize, String, usize)],
    containers: &[(usize, String, Vec<String>)],
) -> Vec<(usize, TargetError)> {
    // An entry naming a parameter (`q_proj.weight`) may mean the layer one segment up.
    let mut wanted_lengths: Vec<usize> = Vec::new();
    for (_, text, len) in unmatched {
        let parameter = PARAMETER_NAMES.iter().any(|name| text.ends_with(name));
        let owner = len.checked_sub(1).filter(|_| parameter);
        for len in core::iter::once(*len).chain(owner) {
            if !wanted_lengths.contains(&len) {
                wanted_lengths.push(len);
            }
        }
    }
    // The valid targets each unmatched entry could have meant, by its segment count.
    let mut suffixes: Vec<(usize, String)> = Vec::new();
    let mut seen: HashSet<(usize, String)> = HashSet::new();
    let mut inside: Vec<Vec<String>> = containers.iter().map(|_| Vec::new()).collect();
    let mut joined = String::new();
    walk(model, |node| {
        if node.kind().is_none() {
            return;
        }
        let segments = node.path().segments();
        for &len in &wanted_lengths {
            let Some(tail) = target_tail(segments, len) else {
                continue;
            };
            let suffix = (len, Path::new(tail).to_owned_string(true));
            if seen.insert(suffix.clone()) {
                suffixes.push(suffix);
            }
        }
        if containers.is_empty() {
            return;
        }
        joined.clear();
        push_path(&mut joined, segments, false);
        for ((_, _, matched), layers) in containers.iter().zip(&mut inside) {
            for prefix in matched {
                let rest = if prefix.is_empty() {
                    Some(joined.as_str())
                } else {
                    joined
                        .strip_prefix(prefix.as_str())
                        .and_then(|rest| rest.strip_prefix('.'))
                };
                if let Some(rest) = rest {
                    let rest = crate::path::normalize(rest);
                    // One more than are listed, so that the error can say there are more.
                    if layers.len() <= LAYERS_INSIDE && !layers.contains(&rest) {
                        layers.push(rest);
                    }
                }
            }
        }
    });
    let mut errors = Vec::new();
    for (position, text, len) in unmatched {
        let suggestions = if *len == 0 {
            Vec::new()
        } else {
            let query = crate::path::normalize(text.trim_start_matches('^'));
            // A parameter's name (`q_proj.weight`, as PEFT's `target_parameters` or a
            // checkpoint writes it) names the layer that owns it.
            let owner = PARAMETER_NAMES
                .iter()
                .find_map(|parameter| query.strip_suffix(parameter))
                .filter(|owner| {
                    suffixes
                        .iter()
                        .any(|(wanted, suffix)| *wanted + 1 == *len && suffix == owner)
                });
            match owner {
                Some(owner) => vec![owner.to_owned()],
                None => suggest::nearest(
                    &query,
                    suffixes
                        .iter()
                        .filter(|(wanted, _)| wanted == len)
                        .map(|(_, suffix)| suffix.as_str()),
                )
                .into_iter()
                .map(str::to_owned)
                .collect(),
            }
        };
        errors.push((
            *position,
            TargetError::NoMatch {
                entry: text.clone(),
                suggestions,
            },
        ));
    }
    for ((position, text, matched), layers_inside) in containers.iter().zip(inside) {
        errors.push((
            *position,
            TargetError::NotALayer {
                entry: text.clone(),
                matched: matched.clone(),
                layers_inside,
            },
        ));
    }
    errors
}

/// The last `len` segments of a layer's path as a valid target: widened to the name before a
/// leading index (`experts.<>.w1`, never `<>.w1`), and `None` when only a root index is left.
fn target_tail<'s, 'a>(segments: &'s [Segment<'a>], len: usize) -> Option<&'s [Segment<'a>]> {
    if len == 0 || len > segments.len() {
        return None;
    }
    let mut start = segments.len() - len;
    while start > 0 && segments[start].normalized().is_none() {
        start -= 1;
    }
    segments[start]
        .normalized()
        .is_some()
        .then(|| &segments[start..])
}

/// How many trailing segments of each node to compare an unmatched entry with: its segment
/// count, or none for shorthands and regexes.
fn suggestion_length(pattern: &Pattern) -> usize {
    match pattern.kind() {
        PatternKind::Segments => pattern.segments().map_or(0, |segments| {
            segments
                .iter()
                .filter(|segment| **segment != PatternSegment::AnyRun)
                .count()
        }),
        PatternKind::Shorthand(_) | PatternKind::Regex => 0,
    }
}

/// Why a spec leaves a node out, for messages about a tensor that names it: the PEFT option
/// responsible.
impl TargetSpec {
    /// The PEFT option that leaves `node` out (`"modules_to_save"`, `"exclude_modules"`,
    /// `"layers_to_transform"`, `"target_modules"`), or `None` when the spec selects it.
    /// `joined` is the node's joined path.
    #[must_use]
    pub fn left_out_by(&self, node: &Node<'_, '_>, joined: &str) -> Option<&'static str> {
        if node.kind().is_none() || !self.entries.iter().any(|e| e.matches_with(node, joined)) {
            return Some("target_modules");
        }
        if self.in_saved_module(node.path().segments(), joined) {
            return Some("modules_to_save");
        }
        if self.exclusions.iter().any(|e| e.matches_with(node, joined))
            || self.excluded_by(node.path().segments(), joined).is_some()
        {
            return Some("exclude_modules");
        }
        if self
            .layers
            .as_ref()
            .is_some_and(|filter| !filter.keeps_with(node, joined))
        {
            return Some("layers_to_transform");
        }
        None
    }
}

impl TargetSpec {
    /// Each rank of 0 and each alpha that is not finite, described.
    fn invalid_settings(&self) -> impl Iterator<Item = String> + '_ {
        let rank = (self.rank == 0).then(|| format!("rank {}", self.rank));
        let alpha = (!self.alpha.is_finite()).then(|| format!("alpha {}", self.alpha));
        let ranks = self
            .rank_pattern
            .iter()
            .filter(|(_, rank)| *rank == 0)
            .map(|(pattern, rank)| format!("rank pattern `{pattern}` = {rank}"));
        let alphas = self
            .alpha_pattern
            .iter()
            .filter(|(_, alpha)| !alpha.is_finite())
            .map(|(pattern, alpha)| format!("alpha pattern `{pattern}` = {alpha}"));
        rank.into_iter().chain(alpha).chain(ranks).chain(alphas)
    }
}
