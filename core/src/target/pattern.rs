//! Target patterns: one entry of a target spec, parsed once into a matcher.
//!
//! An entry is a shorthand (`all-linear`, `all-embedding`, `all-router`, `all-experts`,
//! `all-shared-experts`), a pattern of
//! dot-separated segments matched against a trailing run of *whole* path segments, or a regex
//! written `re:…` matched against the whole joined path. Pattern segments are literals (a
//! canonical run of digits such as `1` is an index and matches only index 1), `<>` (any index),
//! `*` (any one segment) and `**` (any run of segments, possibly empty); a leading `^` anchors the
//! pattern at the root. Matching a segment pattern compares segments directly and allocates
//! nothing. Parse errors carry the byte offset and the offending text; parsing never panics.

use core::fmt;
use core::str::FromStr;

use regex::{Regex, RegexBuilder};

use crate::kind::Kind;
use crate::path::Segment;
pub use crate::target::shorthand::Shorthand;
use crate::target::syntax::{PatternError, PatternErrorKind, parse_segments};
use crate::walk::Node;

/// The most segments a pattern may have (the compile-time matcher keeps them in a fixed array).
pub const MAX_SEGMENTS: usize = 64;
/// The longest regex source accepted after `re:`, in bytes.
pub const MAX_REGEX_LEN: usize = 4096;
/// The compiled-size limit of a regex, in bytes (see [`RegexBuilder::size_limit`]).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// The deepest nesting of groups and repetitions a regex may have.
pub const REGEX_NEST_LIMIT: u32 = 64;

/// One segment of a path pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PatternSegment {
    /// A name or map key; when `index` is set (the text is a canonical run of digits), it matches
    /// that index instead.
    Literal {
        /// The segment as written.
        text: Box<str>,
        /// The index a digit literal stands for.
        index: Option<usize>,
    },
    /// `<>`: any index.
    AnyIndex,
    /// `*`: any one segment.
    AnyOne,
    /// `**`: any run of segments, possibly empty.
    AnyRun,
}

impl PatternSegment {
    /// Whether this (non-`**`) segment matches one path segment. A schema's `<>` is matched by
    /// anything that can match an index, and its `*` (any map key) by any name or `*`.
    #[must_use]
    pub fn matches(&self, segment: &Segment<'_>) -> bool {
        match (self, segment) {
            (PatternSegment::AnyOne | PatternSegment::AnyRun, _) => true,
            (PatternSegment::AnyIndex, Segment::Index(_) | Segment::AnyIndex) => true,
            (PatternSegment::AnyIndex, _) => false,
            (PatternSegment::Literal { index, .. }, Segment::Index(actual)) => {
                *index == Some(*actual)
            }
            (PatternSegment::Literal { index, .. }, Segment::AnyIndex) => index.is_some(),
            (PatternSegment::Literal { text, .. }, Segment::Name(name) | Segment::Key(name)) => {
                **text == **name
            }
            (PatternSegment::Literal { index, .. }, Segment::AnyKey) => index.is_none(),
        }
    }
}

impl fmt::Display for PatternSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternSegment::Literal { text, .. } => f.write_str(text),
            PatternSegment::AnyIndex => f.write_str("<>"),
            PatternSegment::AnyOne => f.write_str("*"),
            PatternSegment::AnyRun => f.write_str("**"),
        }
    }
}

/// A parsed target entry: parse once, match many times.
#[derive(Clone, Debug)]
pub struct Pattern {
    repr: Repr,
    /// Written with a leading `?`: matching nothing is no error (a spec shared by models that
    /// lack the layer); the resolution's entry report says so.
    optional: bool,
    /// Whether the entry is one of PEFT's `target_parameters`, and which kind.
    parameter: Parameter,
}

/// What a `target_parameters` entry names (see [`Pattern::peft_parameter`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parameter {
    /// Not a `target_parameters` entry: a module pattern.
    No,
    /// A parameter adapted whole: it matches expert banks (`grouped_linear` leaves) only, as
    /// PEFT matches it against parameter names and never against a module (`down_proj` is the
    /// bank `experts.down_proj`, not the linear `mlp.down_proj`, whose parameter is
    /// `mlp.down_proj.weight`).
    Bank,
    /// `<module>.weight`: that module's own weight, matched as the module's leaf.
    Weight,
}

#[derive(Clone, Debug)]
enum Repr {
    Shorthand(Shorthand),
    Segments {
        anchored: bool,
        segments: Vec<PatternSegment>,
    },
    Regex {
        source: Box<str>,
        regex: Regex,
    },
}

/// What kind of entry a [`Pattern`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatternKind {
    /// A shorthand such as `all-linear`.
    Shorthand(Shorthand),
    /// A path pattern of segments.
    Segments,
    /// A `re:` regex over the whole joined path.
    Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        if self.optional != other.optional || self.parameter != other.parameter {
            return false;
        }
        match (&self.repr, &other.repr) {
            (Repr::Shorthand(a), Repr::Shorthand(b)) => a == b,
            (
                Repr::Segments {
                    anchored: a,
                    segments: sa,
                },
                Repr::Segments {
                    anchored: b,
                    segments: sb,
                },
            ) => a == b && sa == sb,
            (Repr::Regex { source: a, .. }, Repr::Regex { source: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for Pattern {}

impl Pattern {
    /// Parses one entry: a shorthand, a segment pattern, or `re:` followed by a regex.
    ///
    /// # Errors
    ///
    /// A [`PatternError`] with the byte offset and the offending text.
    ///
    /// ```
    /// use moduletree::target::Pattern;
    ///
    /// let pattern = Pattern::parse("layers.<>.mlp.down_proj").unwrap();
    /// assert_eq!(pattern.to_string(), "layers.<>.mlp.down_proj");
    /// let error = Pattern::parse("layers..q_proj").unwrap_err();
    /// assert_eq!(error.offset, 7);
    /// ```
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        // `?name`: an optional entry, which may match nothing.
        if let Some(rest) = text.strip_prefix('?') {
            return Pattern::parse(rest)
                .map(Pattern::optional)
                .map_err(|error| error.shifted(text, 1));
        }
        if let Some(source) = text.strip_prefix("re:") {
            if source.is_empty() {
                return Err(PatternError::new(text, 3, PatternErrorKind::Empty));
            }
            return Pattern::regex_at(text, source, 3);
        }
        if let Some(shorthand) = Shorthand::from_name(text) {
            return Ok(Pattern::shorthand(shorthand));
        }
        if text.starts_with("all-") {
            return Err(PatternError::new(
                text,
                0,
                PatternErrorKind::UnknownShorthand {
                    suggestion: crate::target::suggest::nearest(
                        text,
                        Shorthand::ALL.iter().map(|shorthand| shorthand.name()),
                    )
                    .into_iter()
                    .next(),
                },
            ));
        }
        let (anchored, body, start) = match text.strip_prefix('^') {
            Some(body) => (true, body, 1),
            None => (false, text, 0),
        };
        if body.is_empty() {
            return Err(PatternError::new(text, start, PatternErrorKind::Empty));
        }
        let segments = parse_segments(text, body, start, |previous, segment, _| {
            (*segment == PatternSegment::AnyRun && previous == Some(&PatternSegment::AnyRun))
                .then_some(PatternErrorKind::RepeatedRun)
        })?;
        Ok(Pattern {
            repr: Repr::Segments { anchored, segments },
            optional: false,
            parameter: Parameter::No,
        })
    }

    /// A regex matched against the whole joined path (the `re:` form, without the prefix).
    ///
    /// # Errors
    ///
    /// A [`PatternError`] when the regex does not parse or exceeds the size limits.
    pub fn regex(source: &str) -> Result<Pattern, PatternError> {
        Pattern::regex_at(source, source, 0)
    }

    fn regex_at(text: &str, source: &str, start: usize) -> Result<Pattern, PatternError> {
        let regex = build_regex(text, start, source, &format!("^(?:{source})$"))?;
        Ok(Pattern {
            repr: Repr::Regex {
                source: source.into(),
                regex,
            },
            optional: false,
            parameter: Parameter::No,
        })
    }

    /// A PEFT list entry: a literal dotted name that matches a path equal to it or ending with
    /// `"." + name`, segment by segment.
    ///
    /// # Errors
    ///
    /// A [`PatternError`] for an empty name or segment, or a segment that is not a plain name or
    /// index (PEFT compares such names literally, so they could never match).
    pub fn peft_name(name: &str) -> Result<Pattern, PatternError> {
        if let Some(rest) = name.strip_prefix('?') {
            return Pattern::peft_name(rest)
                .map(Pattern::optional)
                .map_err(|error| error.shifted(name, 1));
        }
        if name.is_empty() {
            return Err(PatternError::new(name, 0, PatternErrorKind::Empty));
        }
        // PEFT compares list entries with module names literally: `^` anchors nothing there.
        if name.starts_with('^') {
            let segment = name.split('.').next().unwrap_or(name).to_owned();
            return Err(PatternError::new(
                name,
                0,
                PatternErrorKind::NotAName { segment },
            ));
        }
        let segments = parse_segments(name, name, 0, |_, segment, part| {
            (!matches!(segment, PatternSegment::Literal { .. })).then(|| {
                PatternErrorKind::NotAName {
                    segment: part.to_owned(),
                }
            })
        })?;
        Ok(Pattern {
            repr: Repr::Segments {
                anchored: false,
                segments,
            },
            optional: false,
            parameter: Parameter::No,
        })
    }

    /// The shorthand pattern.
    #[must_use]
    pub const fn shorthand(shorthand: Shorthand) -> Pattern {
        Pattern {
            repr: Repr::Shorthand(shorthand),
            optional: false,
            parameter: Parameter::No,
        }
    }

    /// An entry of PEFT's `target_parameters`: a parameter's name, matched as PEFT matches it.
    /// `<module>.weight` is that module's whole weight, so it matches the module's leaf (a router
    /// whose weight is not an `nn.Linear`'s, as PEFT's `all-linear` writes `gate.weight`); any
    /// other name is a parameter adapted whole and matches expert banks only. Either is matched
    /// whatever `layers_to_transform` and `exclude_modules` say, as PEFT matches it.
    ///
    /// # Errors
    ///
    /// Those of [`Pattern::peft_name`].
    pub fn peft_parameter(name: &str) -> Result<Pattern, PatternError> {
        let (module, parameter) = match name.strip_suffix(".weight") {
            Some(module) => (module, Parameter::Weight),
            None => (name, Parameter::Bank),
        };
        Pattern::peft_name(module).map(|pattern| Pattern {
            parameter,
            ..pattern
        })
    }

    /// For a `target_parameters` entry naming a parameter adapted whole (expert banks only), the
    /// same name as a module pattern, which matches a linear of that name too; `None` otherwise.
    pub(crate) fn bank_name_as_module(&self) -> Option<Pattern> {
        (self.parameter == Parameter::Bank).then(|| Pattern {
            parameter: Parameter::No,
            ..self.clone()
        })
    }

    /// Whether the entry is one of PEFT's `target_parameters` ([`Pattern::peft_parameter`]),
    /// which PEFT matches whatever `layers_to_transform` and `exclude_modules` say.
    #[must_use]
    pub fn is_parameter(&self) -> bool {
        self.parameter != Parameter::No
    }

    /// The same entry, optional: matching nothing is no error (`?v_proj` in the text form), for a
    /// spec shared by architectures of which some lack the layer.
    #[must_use]
    pub fn optional(self) -> Pattern {
        Pattern {
            optional: true,
            ..self
        }
    }

    /// Whether the entry is optional.
    #[must_use]
    pub const fn is_optional(&self) -> bool {
        self.optional
    }

    /// What kind of entry this is.
    #[must_use]
    pub fn kind(&self) -> PatternKind {
        match &self.repr {
            Repr::Shorthand(shorthand) => PatternKind::Shorthand(*shorthand),
            Repr::Segments { .. } => PatternKind::Segments,
            Repr::Regex { .. } => PatternKind::Regex,
        }
    }

    /// The segments of a segment pattern; `None` for shorthands and regexes.
    #[must_use]
    pub fn segments(&self) -> Option<&[PatternSegment]> {
        match &self.repr {
            Repr::Segments { segments, .. } => Some(segments),
            Repr::Shorthand(_) | Repr::Regex { .. } => None,
        }
    }

    /// Whether a segment pattern is anchored at the root (`^`).
    #[must_use]
    pub fn is_anchored(&self) -> bool {
        matches!(&self.repr, Repr::Segments { anchored: true, .. })
    }

    /// Whether the pattern needs the joined path string to match (a regex).
    #[must_use]
    pub fn needs_joined_path(&self) -> bool {
        matches!(self.repr, Repr::Regex { .. })
    }

    /// Whether the pattern matches `node`.
    ///
    /// A regex is matched against the node's joined path, built for this call; to match many
    /// nodes without an allocation each, keep one buffer and call
    /// [`matches_with`](Self::matches_with), as resolution does.
    #[must_use]
    pub fn matches(&self, node: &Node<'_, '_>) -> bool {
        if self.needs_joined_path() {
            let mut joined = String::new();
            crate::path::push_path(&mut joined, node.path().segments(), false);
            self.matches_with(node, &joined)
        } else {
            self.matches_with(node, "")
        }
    }

    /// Whether the pattern matches `node`, given its joined path (only read by regexes; see
    /// [`needs_joined_path`](Self::needs_joined_path)).
    #[must_use]
    pub fn matches_with(&self, node: &Node<'_, '_>, joined: &str) -> bool {
        match &self.repr {
            Repr::Shorthand(shorthand) => node
                .kind()
                .is_some_and(|kind| shorthand.selects(kind, node.is_head(), node.expertise())),
            Repr::Segments { .. } | Repr::Regex { .. } => {
                (self.parameter != Parameter::Bank || node.kind() == Some(Kind::GroupedLinear))
                    && self.matches_path(node.path().segments(), joined)
            }
        }
    }

    /// Whether the pattern matches a path given by its segments and its joined text (read only by
    /// regexes). A shorthand needs a layer's kind and matches no bare path.
    #[must_use]
    pub fn matches_path(&self, path: &[Segment<'_>], joined: &str) -> bool {
        match &self.repr {
            Repr::Segments { anchored, segments } => matches_path(segments, path, *anchored),
            Repr::Regex { regex, .. } => regex.is_match(joined),
            Repr::Shorthand(_) => false,
        }
    }

    /// The position of the most specific pattern for which `matches` holds, the first among
    /// equals: how rank and alpha patterns are chosen for a layer of `path_len` segments.
    pub fn most_specific<'p, V: 'p>(
        patterns: impl IntoIterator<Item = &'p (Pattern, V)>,
        path_len: usize,
        mut matches: impl FnMut(&Pattern) -> bool,
    ) -> Option<usize> {
        let mut chosen: Option<(usize, (usize, usize))> = None;
        for (position, (pattern, _)) in patterns.into_iter().enumerate() {
            if matches(pattern) {
                let specificity = pattern.specificity(path_len);
                if chosen.is_none_or(|(_, best)| specificity > best) {
                    chosen = Some((position, specificity));
                }
            }
        }
        chosen.map(|(position, _)| position)
    }

    /// How specific the pattern is on a path it matched of `path_len` segments, for choosing
    /// among rank and alpha patterns: the number of path segments it names (an anchored pattern
    /// or a regex names the whole path; a regex also counts its escaped dots + 1, whichever is
    /// less), then the number of literal segments.
    #[must_use]
    pub fn specificity(&self, path_len: usize) -> (usize, usize) {
        match &self.repr {
            Repr::Shorthand(_) => (0, 0),
            Repr::Segments { anchored, segments } => {
                let literals = segments
                    .iter()
                    .filter(|segment| matches!(segment, PatternSegment::Literal { .. }))
                    .count();
                let named = segments
                    .iter()
                    .filter(|segment| **segment != PatternSegment::AnyRun)
                    .count();
                (if *anchored { path_len } else { named }, literals)
            }
            Repr::Regex { source, .. } => {
                let dots = source.matches("\\.").count() + 1;
                (dots.min(path_len), 0)
            }
        }
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Pattern::parse(text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.optional {
            f.write_str("?")?;
        }
        match &self.repr {
            Repr::Shorthand(shorthand) => f.write_str(shorthand.name()),
            Repr::Segments { anchored, segments } => {
                if *anchored {
                    f.write_str("^")?;
                }
                for (position, segment) in segments.iter().enumerate() {
                    if position > 0 {
                        f.write_str(".")?;
                    }
                    fmt::Display::fmt(segment, f)?;
                }
                Ok(())
            }
            Repr::Regex { source, .. } => write!(f, "re:{source}"),
        }
    }
}

/// Whether `pattern` matches `path`: a pattern without `**` compares a fixed run of trailing
/// segments (the whole path when anchored), last segment first, which rejects most paths at once;
/// one with `**` goes through [`glob`].
fn matches_path(pattern: &[PatternSegment], path: &[Segment<'_>], anchored: bool) -> bool {
    if pattern.contains(&PatternSegment::AnyRun) {
        return glob(pattern, path, !anchored);
    }
    if path.len() < pattern.len() || (anchored && path.len() != pattern.len()) {
        return false;
    }
    pattern
        .iter()
        .rev()
        .zip(path.iter().rev())
        .all(|(pattern, segment)| pattern.matches(segment))
}

/// Glob matching of pattern segments against path segments, where `**` matches any run: the
/// classic backtrack-to-the-last-star algorithm, linear in practice, without allocation. An
/// unanchored pattern behaves as if it began with `**`.
fn glob(pattern: &[PatternSegment], path: &[Segment<'_>], unanchored: bool) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = unanchored.then_some((0, 0));
    while s < path.len() {
        match pattern.get(p) {
            Some(PatternSegment::AnyRun) => {
                p += 1;
                star = Some((p, s));
            }
            Some(segment) if segment.matches(&path[s]) => {
                p += 1;
                s += 1;
            }
            _ => match star {
                Some((star_p, star_s)) => {
                    p = star_p;
                    s = star_s + 1;
                    star = Some((star_p, star_s + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..]
        .iter()
        .all(|segment| *segment == PatternSegment::AnyRun)
}

/// Compiles `wrapped`, a regex built around the user's `source` (itself checked to parse alone,
/// so that it cannot close the group it is wrapped in), within the length, size and nesting
/// limits every regex of a target spec keeps; errors point at `text` from `start`.
fn build_regex(
    text: &str,
    start: usize,
    source: &str,
    wrapped: &str,
) -> Result<Regex, PatternError> {
    if source.len() > MAX_REGEX_LEN {
        return Err(PatternError::new(
            text,
            start,
            PatternErrorKind::RegexTooLong { len: source.len() },
        ));
    }
    let build = |source: &str| {
        RegexBuilder::new(source)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
    };
    let regex_error = |error: regex::Error| {
        PatternError::new(
            text,
            start,
            PatternErrorKind::Regex {
                message: error.to_string(),
            },
        )
    };
    build(source).map_err(regex_error)?;
    build(wrapped).map_err(regex_error)
}

/// A regex of the user's `source` wrapped as `wrapped`, within a target spec's limits (see
/// [`Pattern::regex`]).
pub(crate) fn compile_regex(source: &str, wrapped: &str) -> Result<Regex, PatternError> {
    build_regex(source, 0, source, wrapped)
}
