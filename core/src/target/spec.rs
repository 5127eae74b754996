//! The target spec: entries, exclusions, a layer filter, ranks and alphas, strictness.
//!
//! A [`TargetSpec`] is built once (from strings, from a `targets!` invocation, or from a PEFT
//! `adapter_config.json`) and then resolved against any number of models; resolving reads it and
//! never changes it. Every pattern in it is already parsed.

use core::fmt;

use crate::path::Segment;
use crate::target::pattern::Pattern;
use crate::target::peft::is_plain;
use crate::target::syntax::PatternError;
use crate::walk::Node;

/// PEFT's default rank `r`.
pub const DEFAULT_RANK: u32 = 8;
/// PEFT's default `lora_alpha`.
pub const DEFAULT_ALPHA: f64 = 8.0;

/// Which layers an adapter adapts, and with what rank and alpha.
///
/// ```
/// use moduletree::target::TargetSpec;
///
/// let spec = TargetSpec::parse(["q_proj", "layers.<>.mlp.down_proj"])
///     .unwrap()
///     .with_exclusions(["layers.0.mlp.down_proj"])
///     .unwrap()
///     .with_layers([0, 1]);
/// assert_eq!(spec.entries().len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSpec {
    pub(crate) entries: Vec<Pattern>,
    pub(crate) exclusions: Vec<Pattern>,
    pub(crate) saved_modules: Vec<Pattern>,
    pub(crate) layers: Option<LayerFilter>,
    pub(crate) rank: u32,
    pub(crate) alpha: f64,
    pub(crate) rank_pattern: Vec<(Pattern, u32)>,
    pub(crate) alpha_pattern: Vec<(Pattern, f64)>,
    pub(crate) strict: bool,
    /// PEFT's reading: an entry whose every match is excluded is a warning, not an error (PEFT
    /// saves `all-linear` as the full list of linear paths, excluded ones included).
    pub(crate) excluded_entries_warn: bool,
}

/// Keeps the layers whose layer index is listed.
#[derive(Clone, Debug)]
pub struct LayerFilter {
    /// The indices kept, sorted and distinct.
    indices: Vec<usize>,
    /// Where a layer's index is read.
    source: LayerIndexSource,
    /// `source`'s `layers_pattern` entries, each split or compiled once.
    after: Vec<IndexAfter>,
}

/// One `layers_pattern` entry, ready to match.
#[derive(Clone, Debug)]
enum IndexAfter {
    /// Plain dotted names, matched segment by segment.
    Names(Vec<String>),
    /// PEFT's `.*?\.{pattern}\.(\d+)\.` on the joined path.
    Regex(regex::Regex),
}

impl PartialEq for LayerFilter {
    fn eq(&self, other: &Self) -> bool {
        self.indices == other.indices && self.source == other.source
    }
}

/// Where the layer filter reads a node's layer index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerIndexSource {
    /// [`Node::layer_index`]: the index under the container marked `#[tree(layers)]`, else the
    /// first index segment of the path.
    Tree,
    /// PEFT's `layers_pattern`: the index right after the first run of segments (from the
    /// root) named like the first of these patterns that occurs so in the path. A pattern of
    /// plain dotted names (`layers`, `model.layers`) matches whole segments; any other is a
    /// regex matched as PEFT 0.21 matches it, `.*?\.{pattern}\.(\d+)\.` on the joined path.
    After(Vec<String>),
}

/// The first of `patterns` that matches the path at `segments` or one above it (`joined` holds
/// the path's text, read only by regexes).
fn at_or_below(patterns: &[Pattern], segments: &[Segment<'_>], joined: &str) -> Option<usize> {
    if patterns.is_empty() {
        return None;
    }
    let mut ends = joined
        .match_indices('.')
        .map(|(dot, _)| dot)
        .chain([joined.len()]);
    (1..=segments.len()).find_map(|len| {
        let prefix = ends.next().map_or("", |end| &joined[..end]);
        patterns
            .iter()
            .position(|pattern| pattern.matches_path(&segments[..len], prefix))
    })
}

fn sorted_distinct(indices: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut indices: Vec<usize> = indices.into_iter().collect();
    indices.sort_unstable();
    indices.dedup();
    indices
}

impl LayerFilter {
    /// A filter keeping `indices` (sorted and deduplicated here), read from `source`.
    ///
    /// # Errors
    ///
    /// A `layers_pattern` entry that is neither plain names nor a regex within the limits of
    /// [`Pattern::regex`].
    pub fn new(
        indices: impl IntoIterator<Item = usize>,
        source: LayerIndexSource,
    ) -> Result<LayerFilter, PatternError> {
        let after = match &source {
            LayerIndexSource::Tree => Vec::new(),
            LayerIndexSource::After(patterns) => patterns
                .iter()
                .map(|pattern| {
                    if is_plain(pattern) {
                        Ok(IndexAfter::Names(
                            pattern.split('.').map(str::to_owned).collect(),
                        ))
                    } else {
                        crate::target::pattern::compile_regex(
                            pattern,
                            // PEFT matches `.*?\.{pattern}\.(\d+)\.` on the path plus a dot:
                            // the index ends the path or a dot follows it.
                            &format!(r"^(?:|.*?\.)(?:{pattern})\.(?P<index>\d+)(?:\.|$)"),
                        )
                        .map(IndexAfter::Regex)
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(LayerFilter {
            indices: sorted_distinct(indices),
            source,
            after,
        })
    }

    /// A filter keeping `indices`, read as [`Node::layer_index`] reads them.
    #[must_use]
    pub fn tree(indices: impl IntoIterator<Item = usize>) -> LayerFilter {
        LayerFilter {
            indices: sorted_distinct(indices),
            source: LayerIndexSource::Tree,
            after: Vec::new(),
        }
    }

    /// The indices kept, sorted and distinct.
    #[must_use]
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// Where a layer's index is read.
    #[must_use]
    pub fn source(&self) -> &LayerIndexSource {
        &self.source
    }

    /// Whether matching needs the node's joined path (a regex `layers_pattern`).
    pub(crate) fn needs_joined_path(&self) -> bool {
        self.after
            .iter()
            .any(|after| matches!(after, IndexAfter::Regex(_)))
    }

    /// Whether `node` passes: its layer index is listed. In a static schema, where an index is
    /// `<>`, a node under a container passes (some instance can hold a listed index).
    #[must_use]
    pub fn keeps(&self, node: &Node<'_, '_>) -> bool {
        let joined = if self.needs_joined_path() {
            node.path().to_owned_string(false)
        } else {
            String::new()
        };
        self.keeps_with(node, &joined)
    }

    /// [`keeps`](Self::keeps) with the node's joined path given (needed only when
    /// [`needs_joined_path`](Self::needs_joined_path)), so that a walk joins each path once.
    pub(crate) fn keeps_with(&self, node: &Node<'_, '_>, joined: &str) -> bool {
        match self.index_of(node, joined) {
            Some(index) => self.indices.binary_search(&index).is_ok(),
            None => node.path().segments().contains(&Segment::AnyIndex),
        }
    }

    /// The layer index the filter reads for `node`, if any.
    pub(crate) fn index_of(&self, node: &Node<'_, '_>, joined: &str) -> Option<usize> {
        match &self.source {
            LayerIndexSource::Tree => node.layer_index(),
            LayerIndexSource::After(_) => self.index_after(node.path().segments(), joined),
        }
    }

    /// The filter in words, for messages: `layers [9]`, or `layers [42] after layers_pattern
    /// ["blocks"]`.
    pub(crate) fn describe(&self) -> String {
        match &self.source {
            LayerIndexSource::Tree => format!("layers {:?}", self.indices),
            LayerIndexSource::After(patterns) => {
                format!(
                    "layers {:?} after `layers_pattern` {patterns:?}",
                    self.indices
                )
            }
        }
    }

    fn index_after(&self, segments: &[Segment<'_>], joined: &str) -> Option<usize> {
        self.after.iter().find_map(|after| match after {
            IndexAfter::Names(names) => segments.windows(names.len() + 1).find_map(|window| {
                let (index, run) = window.split_last()?;
                let named = run.iter().zip(names).all(|(segment, name)| {
                    matches!(segment, Segment::Name(s) | Segment::Key(s) if s == name)
                });
                match index {
                    Segment::Index(index) if named => Some(*index),
                    _ => None,
                }
            }),
            IndexAfter::Regex(regex) => {
                regex.captures(joined)?.name("index")?.as_str().parse().ok()
            }
        })
    }
}

impl TargetSpec {
    /// A spec of these entries, each parsed as a [`Pattern`], with PEFT's default rank and alpha.
    ///
    /// # Errors
    ///
    /// The first entry that does not parse.
    pub fn parse<I>(entries: I) -> Result<TargetSpec, PatternError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let entries = entries
            .into_iter()
            .map(|entry| Pattern::parse(entry.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TargetSpec::from_patterns(entries))
    }

    /// A spec of these parsed entries.
    #[must_use]
    pub fn from_patterns(entries: Vec<Pattern>) -> TargetSpec {
        TargetSpec {
            entries,
            exclusions: Vec::new(),
            saved_modules: Vec::new(),
            layers: None,
            rank: DEFAULT_RANK,
            alpha: DEFAULT_ALPHA,
            rank_pattern: Vec::new(),
            alpha_pattern: Vec::new(),
            strict: false,
            excluded_entries_warn: false,
        }
    }

    /// The spec of a `targets!` invocation, whose entries were checked during compilation.
    #[doc(hidden)]
    #[must_use]
    pub fn __checked(entries: &[&str]) -> TargetSpec {
        TargetSpec::from_patterns(
            entries
                .iter()
                .map(|entry| {
                    Pattern::parse(entry).unwrap_or_else(|error| {
                        unreachable!("`targets!` checked this entry during compilation: {error}")
                    })
                })
                .collect(),
        )
    }

    /// Adds exclusions (same grammar as entries): a layer matched by one, or lying below a module
    /// or container matched by one (`shared_experts` leaves out `shared_experts.up_proj`), is
    /// never selected. A spec read from a PEFT config keeps PEFT's narrower meaning instead; see
    /// [`crate::target::peft`].
    ///
    /// # Errors
    ///
    /// The first exclusion that does not parse.
    pub fn with_exclusions<I>(mut self, exclusions: I) -> Result<TargetSpec, PatternError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        for exclusion in exclusions {
            self.exclusions.push(Pattern::parse(exclusion.as_ref())?);
        }
        Ok(self)
    }

    /// Adds a parsed exclusion.
    #[must_use]
    pub fn with_exclusion(mut self, exclusion: Pattern) -> TargetSpec {
        self.exclusions.push(exclusion);
        self
    }

    /// Adds a module saved whole (PEFT's `modules_to_save`, same grammar as exclusions): no layer
    /// at or below a path that the pattern matches is selected, since PEFT never places an adapter
    /// inside a module it trains and saves whole.
    #[must_use]
    pub fn with_saved_module(mut self, module: Pattern) -> TargetSpec {
        self.saved_modules.push(module);
        self
    }

    /// The modules saved whole, in order.
    #[must_use]
    pub fn saved_modules(&self) -> &[Pattern] {
        &self.saved_modules
    }

    /// Whether the path lies at or below a module saved whole: some leading run of its segments
    /// is matched by a [`saved_modules`](Self::saved_modules) pattern. Regex patterns are matched
    /// against `joined`'s leading runs.
    #[must_use]
    pub fn in_saved_module(&self, segments: &[Segment<'_>], joined: &str) -> bool {
        at_or_below(&self.saved_modules, segments, joined).is_some()
    }

    /// The exclusion that leaves out the layer at `segments` (`joined`, read only by regexes), if
    /// any: in a native spec, one that matches the layer or a module or container above it; in a
    /// spec read from a PEFT config, one that matches the layer itself, as PEFT's
    /// `exclude_modules` does.
    #[must_use]
    pub(crate) fn excluded_by(&self, segments: &[Segment<'_>], joined: &str) -> Option<usize> {
        if self.excluded_entries_warn {
            self.exclusions
                .iter()
                .position(|exclusion| exclusion.matches_path(segments, joined))
        } else {
            at_or_below(&self.exclusions, segments, joined)
        }
    }

    /// Keeps only the layers whose layer index ([`Node::layer_index`]) is listed.
    #[must_use]
    pub fn with_layers(mut self, indices: impl IntoIterator<Item = usize>) -> TargetSpec {
        self.layers = Some(LayerFilter::tree(indices));
        self
    }

    /// Keeps only the layers that `filter` keeps.
    #[must_use]
    pub fn with_layer_filter(mut self, filter: LayerFilter) -> TargetSpec {
        self.layers = Some(filter);
        self
    }

    /// Sets the default rank (`r`).
    #[must_use]
    pub fn with_rank(mut self, rank: u32) -> TargetSpec {
        self.rank = rank;
        self
    }

    /// Sets the default alpha (`lora_alpha`).
    #[must_use]
    pub fn with_alpha(mut self, alpha: f64) -> TargetSpec {
        self.alpha = alpha;
        self
    }

    /// Gives the layers matched by `pattern` this rank. When several rank patterns match a
    /// layer, the most specific wins (see [`Pattern::specificity`]), then the first added.
    ///
    /// # Errors
    ///
    /// When `pattern` does not parse.
    pub fn with_rank_pattern(
        mut self,
        pattern: &str,
        rank: u32,
    ) -> Result<TargetSpec, PatternError> {
        self.rank_pattern.push((Pattern::parse(pattern)?, rank));
        Ok(self)
    }

    /// Gives the layers matched by `pattern` this alpha; chosen like
    /// [`with_rank_pattern`](Self::with_rank_pattern).
    ///
    /// # Errors
    ///
    /// When `pattern` does not parse.
    pub fn with_alpha_pattern(
        mut self,
        pattern: &str,
        alpha: f64,
    ) -> Result<TargetSpec, PatternError> {
        self.alpha_pattern.push((Pattern::parse(pattern)?, alpha));
        Ok(self)
    }

    /// The rank and alpha that resolution gives the layer at `path`, a joined path such as
    /// `model.layers.0.self_attn.q_proj` (all-digit segments are indices): the most specific
    /// matching rank and alpha patterns, else [`rank`](Self::rank) and [`alpha`](Self::alpha).
    /// Loading an adapter uses it for layers known only by their names in a file.
    #[must_use]
    pub fn rank_and_alpha_for(&self, path: &str) -> (u32, f64) {
        let segments = crate::path::segments_of(path);
        let matches = |pattern: &Pattern| pattern.matches_path(&segments, path);
        let rank = Pattern::most_specific(&self.rank_pattern, segments.len(), matches)
            .map_or(self.rank, |at| self.rank_pattern[at].1);
        let alpha = Pattern::most_specific(&self.alpha_pattern, segments.len(), matches)
            .map_or(self.alpha, |at| self.alpha_pattern[at].1);
        (rank, alpha)
    }

    /// For a joined module path that is no node of the model (a per-expert linear whose experts
    /// the model holds fused): the PEFT option that leaves it out, judged on the path alone, or
    /// `None` when the spec selects it. A shorthand entry, which needs a node's kind, is taken
    /// to select it; the layer filter is judged where the path lands (its bank).
    #[must_use]
    pub fn left_out_path(&self, path: &str) -> Option<&'static str> {
        let segments = crate::path::segments_of(path);
        let matches = |pattern: &Pattern| pattern.matches_path(&segments, path);
        let selected = self.entries.iter().any(|entry| {
            matches!(entry.kind(), crate::target::PatternKind::Shorthand(_)) || matches(entry)
        });
        if !selected {
            Some("target_modules")
        } else if self.in_saved_module(&segments, path) {
            Some("modules_to_save")
        } else if self.exclusions.iter().any(matches) {
            Some("exclude_modules")
        } else {
            None
        }
    }

    /// In strict mode every warning of a resolution is an error.
    #[must_use]
    pub fn strict(mut self, strict: bool) -> TargetSpec {
        self.strict = strict;
        self
    }

    /// The entries, in order.
    #[must_use]
    pub fn entries(&self) -> &[Pattern] {
        &self.entries
    }

    /// The exclusions, in order.
    #[must_use]
    pub fn exclusions(&self) -> &[Pattern] {
        &self.exclusions
    }

    /// The layer filter, if any.
    #[must_use]
    pub fn layer_filter(&self) -> Option<&LayerFilter> {
        self.layers.as_ref()
    }

    /// The default rank.
    #[must_use]
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// The default alpha.
    #[must_use]
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The rank patterns, in the order added.
    #[must_use]
    pub fn rank_patterns(&self) -> &[(Pattern, u32)] {
        &self.rank_pattern
    }

    /// The alpha patterns, in the order added.
    #[must_use]
    pub fn alpha_patterns(&self) -> &[(Pattern, f64)] {
        &self.alpha_pattern
    }

    /// Whether warnings are errors.
    #[must_use]
    pub fn is_strict(&self) -> bool {
        self.strict
    }
}

impl fmt::Display for TargetSpec {
    /// The entries joined by `, `, then ` except ` and the exclusions, then the layer filter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, entry) in self.entries.iter().enumerate() {
            if position > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{entry}")?;
        }
        if !self.exclusions.is_empty() {
            f.write_str(" except ")?;
            for (position, exclusion) in self.exclusions.iter().enumerate() {
                if position > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{exclusion}")?;
            }
        }
        if let Some(filter) = &self.layers {
            write!(f, " in layers {:?}", filter.indices)?;
        }
        Ok(())
    }
}
