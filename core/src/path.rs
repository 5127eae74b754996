//! Module paths: segments, display, and normalization.
//!
//! A path is a sequence of [`Segment`]s — field names, container indices and map keys — shown
//! joined by `.` with the root as `""`. Its *normalized* form replaces every index with `<>`, so
//! that one name stands for the same module in every layer
//! (`model.layers.<>.mlp.experts.<>.up_proj`). Paths are compared segment by segment, never as
//! joined strings, so `layers.1` never matches `layers.10` and `proj` never matches `out_proj`.

use core::fmt;

/// The text that stands for any index in a normalized path.
pub const ANY_INDEX: &str = "<>";

/// One step of a module path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Segment<'a> {
    /// A field name (or one part of a dotted `#[tree(rename)]`).
    Name(&'a str),
    /// A position in a `Vec`, array, tuple or tuple struct.
    Index(usize),
    /// A key of a `BTreeMap<String, _>` or `HashMap<String, _>`.
    Key(&'a str),
    /// Any index: a container's elements in a static [`Schema`](crate::Schema), shown as `<>`.
    AnyIndex,
    /// Any key: a map's values in a static [`Schema`](crate::Schema), shown as `*`.
    AnyKey,
}

/// The text that stands for any key of a map in a schema's paths.
pub const ANY_KEY: &str = "*";

impl<'a> Segment<'a> {
    /// The segment as it stands in a normalized path: `None` for an index (`<>`), the text otherwise.
    #[must_use]
    #[inline]
    pub const fn normalized(self) -> Option<&'a str> {
        match self {
            Segment::Name(name) | Segment::Key(name) => Some(name),
            Segment::AnyKey => Some(ANY_KEY),
            Segment::Index(_) | Segment::AnyIndex => None,
        }
    }
}

impl fmt::Display for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Name(name) | Segment::Key(name) => f.write_str(name),
            Segment::Index(index) => write!(f, "{index}"),
            Segment::AnyIndex => f.write_str(ANY_INDEX),
            Segment::AnyKey => f.write_str(ANY_KEY),
        }
    }
}

/// A borrowed module path: the segments from the root to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Path<'n, 'a> {
    segments: &'n [Segment<'a>],
}

impl<'n, 'a> Path<'n, 'a> {
    /// The path made of these segments.
    #[must_use]
    #[inline]
    pub const fn new(segments: &'n [Segment<'a>]) -> Self {
        Path { segments }
    }

    /// The segments, root first.
    #[must_use]
    #[inline]
    pub const fn segments(self) -> &'n [Segment<'a>] {
        self.segments
    }

    /// Whether this is the root (no segment).
    #[must_use]
    #[inline]
    pub const fn is_root(self) -> bool {
        self.segments.is_empty()
    }

    /// The last segment, `None` at the root.
    #[must_use]
    #[inline]
    pub fn last(self) -> Option<Segment<'a>> {
        self.segments.last().copied()
    }

    /// The normalized form, for display: every index shown as `<>`.
    #[must_use]
    #[inline]
    pub const fn normalized(self) -> Normalized<'n, 'a> {
        Normalized(self)
    }

    /// Whether the normalized form of this path equals `other` segment by segment
    /// (`None` in `other` is `<>`).
    #[must_use]
    #[inline]
    pub fn normalized_eq<'s, I>(self, other: I) -> bool
    where
        I: IntoIterator<Item = Option<&'s str>>,
    {
        let mut other = other.into_iter();
        for segment in self.segments {
            match other.next() {
                Some(expected) if expected == segment.normalized() => {}
                _ => return false,
            }
        }
        other.next().is_none()
    }
}

impl Path<'_, '_> {
    /// The path joined by `.`, normalized or not: [`named_modules`](crate::named_modules) builds
    /// one per node.
    pub(crate) fn to_owned_string(self, normalized: bool) -> String {
        // Exactly its length, so that a caller boxing it (`into_boxed_str`) does not reallocate.
        let len = self
            .segments
            .iter()
            .map(|segment| match (segment, normalized) {
                (Segment::Index(index), false) => index.checked_ilog10().unwrap_or(0) as usize + 1,
                (segment, _) => segment.normalized().unwrap_or(ANY_INDEX).len(),
            })
            .sum::<usize>()
            + self.segments.len().saturating_sub(1);
        let mut out = String::with_capacity(len);
        push_path(&mut out, self.segments, normalized);
        out
    }
}

/// Appends `segments` joined by `.` to `out`; with `normalized`, every index as `<>`.
///
/// For code that joins paths in a loop over many nodes, into one reused buffer.
pub fn push_path(out: &mut String, segments: &[Segment<'_>], normalized: bool) {
    // Writing to a `String` cannot fail.
    let _ = write_path(out, segments, normalized);
}

/// The one path writer behind [`Path`]'s and [`Normalized`]'s `Display` and [`push_path`].
/// Indices are written by `itoa`, not the formatting machinery: paths are written per node.
fn write_path(
    out: &mut impl fmt::Write,
    segments: &[Segment<'_>],
    normalized: bool,
) -> fmt::Result {
    for (position, segment) in segments.iter().enumerate() {
        if position > 0 {
            out.write_str(".")?;
        }
        match (segment, normalized) {
            (Segment::Index(index), false) => out.write_str(itoa::Buffer::new().format(*index))?,
            (segment, _) => out.write_str(segment.normalized().unwrap_or(ANY_INDEX))?,
        }
    }
    Ok(())
}

impl fmt::Display for Path<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_path(f, self.segments, false)
    }
}

/// The normalized form of a [`Path`], displayed with `<>` for every index.
#[derive(Clone, Copy, Debug)]
pub struct Normalized<'n, 'a>(Path<'n, 'a>);

impl fmt::Display for Normalized<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_path(f, self.0.segments, true)
    }
}

/// Normalizes a foreign module name, such as a checkpoint's tensor prefix: every all-digit
/// segment becomes `<>`, the last one too.
///
/// ```
/// assert_eq!(moduletree::normalize("model.layers.12.mlp"), "model.layers.<>.mlp");
/// assert_eq!(moduletree::normalize("layers.0"), "layers.<>");
/// assert_eq!(moduletree::normalize("h2o.x1"), "h2o.x1");
/// ```
#[must_use]
pub fn normalize(name: &str) -> String {
    let mut normalized = String::with_capacity(name.len());
    for (position, segment) in name.split('.').enumerate() {
        if position > 0 {
            normalized.push('.');
        }
        if is_index(segment) {
            normalized.push_str(ANY_INDEX);
        } else {
            normalized.push_str(segment);
        }
    }
    normalized
}

/// A joined path's segments (`model.layers.3.q_proj`), digit runs that fit a `usize` as indices.
pub(crate) fn segments_of(path: &str) -> Vec<Segment<'_>> {
    path.split('.')
        .map(|segment| match segment.parse::<usize>() {
            Ok(index) if is_index(segment) => Segment::Index(index),
            _ => Segment::Name(segment),
        })
        .collect()
}

/// Whether a segment of a foreign name is an index: one or more ASCII digits.
#[must_use]
pub const fn is_index(segment: &str) -> bool {
    is_index_bytes(segment.as_bytes())
}

/// [`is_index`] on bytes, for constants.
pub(crate) const fn is_index_bytes(segment: &[u8]) -> bool {
    if segment.is_empty() {
        return false;
    }
    let mut at = 0;
    while at < segment.len() {
        if !segment[at].is_ascii_digit() {
            return false;
        }
        at += 1;
    }
    true
}

/// Whether two byte strings are equal, in a constant (`==` on slices is not `const`).
pub(crate) const fn bytes_equal(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let mut at = 0;
    while at < left.len() {
        if left[at] != right[at] {
            return false;
        }
        at += 1;
    }
    true
}

/// The joined path of the node being visited, kept up to date from the previous one.
///
/// A walk visits nodes depth-first, so consecutive paths share a long prefix: only the segments
/// after the shared prefix are written, and the shared prefix is found by comparing segment
/// addresses before text.
#[derive(Default)]
pub(crate) struct JoinedPath<'a> {
    segments: Vec<Segment<'a>>,
    /// The text's length after each segment.
    ends: Vec<usize>,
    pub(crate) text: String,
}

fn same_segment(a: &Segment<'_>, b: &Segment<'_>) -> bool {
    match (a, b) {
        (Segment::Name(a), Segment::Name(b)) | (Segment::Key(a), Segment::Key(b)) => {
            a.len() == b.len() && (core::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b)
        }
        (Segment::Index(a), Segment::Index(b)) => a == b,
        (Segment::AnyIndex, Segment::AnyIndex) | (Segment::AnyKey, Segment::AnyKey) => true,
        _ => false,
    }
}

impl<'a> JoinedPath<'a> {
    /// Moves to the path `segments`, whose first `unchanged` segments are known to be the
    /// current path's (see `Node::unchanged_prefix`); only the rest is compared.
    pub(crate) fn update(&mut self, segments: &[Segment<'a>], unchanged: usize) {
        let known = unchanged.min(self.segments.len()).min(segments.len());
        let shared = known
            + self.segments[known..]
                .iter()
                .zip(&segments[known..])
                .take_while(|(old, new)| same_segment(old, new))
                .count();
        self.segments.truncate(shared);
        self.ends.truncate(shared);
        self.text.truncate(self.ends.last().copied().unwrap_or(0));
        for segment in &segments[shared..] {
            if !self.segments.is_empty() {
                self.text.push('.');
            }
            push_path(&mut self.text, core::slice::from_ref(segment), false);
            self.segments.push(*segment);
            self.ends.push(self.text.len());
        }
    }
}
