//! The grammar of target patterns: the segment syntax that [`Pattern::parse`] and the
//! compile-time matcher ([`check_entry`](crate::target::check_entry)) share, and the parse
//! errors, with the byte offset and the offending text.
//!
//! [`Pattern::parse`]: crate::target::Pattern::parse

use crate::target::pattern::{MAX_REGEX_LEN, MAX_SEGMENTS, PatternSegment};

/// Parses the dot-separated segments of `body`, which starts at byte `start` of `text`; `reject`
/// sees the previous segment, each new one and its text, and names what is wrong with it, if
/// anything.
pub(crate) fn parse_segments(
    text: &str,
    body: &str,
    start: usize,
    reject: impl Fn(Option<&PatternSegment>, &PatternSegment, &str) -> Option<PatternErrorKind>,
) -> Result<Vec<PatternSegment>, PatternError> {
    let mut segments = Vec::new();
    let mut offset = start;
    for part in body.split('.') {
        if segments.len() == MAX_SEGMENTS {
            return Err(PatternError::new(
                text,
                offset,
                PatternErrorKind::TooManySegments,
            ));
        }
        let segment = parse_segment(text, part, offset)?;
        if let Some(kind) = reject(segments.last(), &segment, part) {
            return Err(PatternError::new(text, offset, kind));
        }
        segments.push(segment);
        offset += part.len() + 1;
    }
    Ok(segments)
}

pub(crate) fn parse_segment(
    text: &str,
    part: &str,
    offset: usize,
) -> Result<PatternSegment, PatternError> {
    let literal = |index| PatternSegment::Literal {
        text: part.into(),
        index,
    };
    let (at, kind) = match segment_syntax(part.as_bytes()) {
        Ok(SegmentSyntax::AnyIndex) => return Ok(PatternSegment::AnyIndex),
        Ok(SegmentSyntax::AnyOne) => return Ok(PatternSegment::AnyOne),
        Ok(SegmentSyntax::AnyRun) => return Ok(PatternSegment::AnyRun),
        Ok(SegmentSyntax::Name) => return Ok(literal(None)),
        Ok(SegmentSyntax::Index(index)) => return Ok(literal(Some(index))),
        Err(SegmentFault::Empty) => (0, PatternErrorKind::EmptySegment),
        Err(SegmentFault::MisplacedAnchor(at)) => (at, PatternErrorKind::MisplacedAnchor),
        Err(SegmentFault::BadWildcard(at)) => (
            at,
            PatternErrorKind::BadWildcard {
                segment: part.to_owned(),
            },
        ),
        Err(SegmentFault::LeadingZero) => (
            0,
            PatternErrorKind::LeadingZero {
                segment: part.to_owned(),
            },
        ),
        Err(SegmentFault::IndexOverflow) => (
            0,
            PatternErrorKind::IndexOverflow {
                segment: part.to_owned(),
            },
        ),
    };
    Err(PatternError::new(text, offset + at, kind))
}

/// One segment of a segment pattern as the grammar reads it.
#[derive(Clone, Copy)]
pub(crate) enum SegmentSyntax {
    /// `<>`.
    AnyIndex,
    /// `*`.
    AnyOne,
    /// `**`.
    AnyRun,
    /// A name or map key.
    Name,
    /// A canonical run of digits.
    Index(usize),
}

/// Why one segment does not parse; the byte offset within the segment where it says so.
#[derive(Clone, Copy)]
pub(crate) enum SegmentFault {
    Empty,
    MisplacedAnchor(usize),
    BadWildcard(usize),
    LeadingZero,
    IndexOverflow,
}

impl SegmentFault {
    /// The fault in words, for a constant: the run-time error's words without the segment.
    pub(crate) const fn words(self) -> &'static str {
        match self {
            SegmentFault::Empty => {
                "empty segment: expected a name, an index, `<>`, `*` or `**` between dots"
            }
            SegmentFault::MisplacedAnchor(_) => "`^` is only allowed at the start of a pattern",
            SegmentFault::BadWildcard(_) => {
                "a segment mixes a wildcard with text: expected `<>`, `*`, `**` or a name"
            }
            SegmentFault::LeadingZero => "an index has a leading zero",
            SegmentFault::IndexOverflow => "an index is too large",
        }
    }
}

/// The grammar of one segment, for both [`Pattern::parse`] and the compile-time matcher
/// ([`check_entry`](crate::target::check_entry)), which must read entries alike.
pub(crate) const fn segment_syntax(part: &[u8]) -> Result<SegmentSyntax, SegmentFault> {
    match part {
        [] => return Err(SegmentFault::Empty),
        b"<>" => return Ok(SegmentSyntax::AnyIndex),
        b"*" => return Ok(SegmentSyntax::AnyOne),
        b"**" => return Ok(SegmentSyntax::AnyRun),
        _ => {}
    }
    let mut digits = true;
    let mut i = 0;
    while i < part.len() {
        match part[i] {
            b'^' => return Err(SegmentFault::MisplacedAnchor(i)),
            b'<' | b'>' | b'*' => return Err(SegmentFault::BadWildcard(i)),
            byte => digits &= byte.is_ascii_digit(),
        }
        i += 1;
    }
    if !digits {
        return Ok(SegmentSyntax::Name);
    }
    if part.len() > 1 && part[0] == b'0' {
        return Err(SegmentFault::LeadingZero);
    }
    let mut value: usize = 0;
    let mut i = 0;
    while i < part.len() {
        let Some(shifted) = value.checked_mul(10) else {
            return Err(SegmentFault::IndexOverflow);
        };
        let Some(next) = shifted.checked_add((part[i] - b'0') as usize) else {
            return Err(SegmentFault::IndexOverflow);
        };
        value = next;
        i += 1;
    }
    Ok(SegmentSyntax::Index(value))
}

/// A pattern that does not parse: where, what text, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid target pattern `{text}` at offset {offset}: {kind}")]
pub struct PatternError {
    /// The whole entry as given.
    pub text: String,
    /// The byte offset of the offending part in `text`.
    pub offset: usize,
    /// What is wrong.
    pub kind: PatternErrorKind,
}

impl PatternError {
    pub(crate) fn new(text: &str, offset: usize, kind: PatternErrorKind) -> Self {
        PatternError {
            text: text.to_owned(),
            offset,
            kind,
        }
    }

    /// The same error in `text`, which holds the parsed entry after `by` bytes (a `?` prefix).
    pub(crate) fn shifted(self, text: &str, by: usize) -> Self {
        PatternError {
            text: text.to_owned(),
            offset: self.offset + by,
            kind: self.kind,
        }
    }
}

/// Why a pattern does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternErrorKind {
    /// Nothing to match.
    #[error("the pattern is empty")]
    Empty,
    /// Two dots in a row, or a dot at either end.
    #[error("empty segment: expected a name, an index, `<>`, `*` or `**` between dots")]
    EmptySegment,
    /// `^` anywhere but at the very start.
    #[error("`^` is only allowed at the start of a pattern")]
    MisplacedAnchor,
    /// `<`, `>` or `*` inside a segment that is not exactly `<>`, `*` or `**`.
    #[error("segment `{segment}` mixes a wildcard with text: expected `<>`, `*`, `**` or a name")]
    BadWildcard {
        /// The offending segment.
        segment: String,
    },
    /// `**.**`: the second run adds nothing.
    #[error("`**` directly after `**` is redundant")]
    RepeatedRun,
    /// An index written with a leading zero, such as `01`.
    #[error("index `{segment}` has a leading zero")]
    LeadingZero {
        /// The offending segment.
        segment: String,
    },
    /// An index too large for `usize`.
    #[error("index `{segment}` is too large")]
    IndexOverflow {
        /// The offending segment.
        segment: String,
    },
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("more than {MAX_SEGMENTS} segments")]
    TooManySegments,
    /// `all-…` that is not a known shorthand.
    #[error("unknown shorthand: expected `all-linear`, `all-embedding`, `all-router`, `all-experts` or `all-shared-experts`{}",
        suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownShorthand {
        /// The nearest shorthand, if one is close.
        suggestion: Option<&'static str>,
    },
    /// A PEFT name segment that is a wildcard (PEFT compares names literally).
    #[error("segment `{segment}` is not a module name (PEFT names are literal)")]
    NotAName {
        /// The offending segment.
        segment: String,
    },
    /// A regex longer than [`MAX_REGEX_LEN`].
    #[error("regex of {len} bytes is longer than the limit of {MAX_REGEX_LEN}")]
    RegexTooLong {
        /// The regex's length in bytes.
        len: usize,
    },
    /// A regex that does not parse or compiles too large.
    #[error("invalid regex: {message}")]
    Regex {
        /// The regex engine's message.
        message: String,
    },
}
