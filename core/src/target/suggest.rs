//! Suggestions for a target that matched nothing: the nearest valid targets.
//!
//! One engine serves the run-time resolver and the compile-time `targets!` check, so it is
//! written with `const fn`s over bytes. What it is offered is the caller's job: both offer only
//! valid targets, the tails of layer paths (never a module or container, never a bare `<>`).
//!
//! A candidate is ranked against the query by, in order:
//! 1. whether it ends with the query's last segment whole (the layer's own name), so
//!    `mlp.q_proj` gets `self_attn.q_proj` before `mlp.up_proj`;
//! 2. the query's whole segments (split at `.`) that the candidate lacks, fewest first;
//! 3. the query's whole words (split at `.`, `_` and `-`) that the candidate lacks, fewest first,
//!    so `gate_prj` gets `gate_proj` before `gate`;
//! 4. the Levenshtein edit distance over bytes, index and wildcard segments left out (a typo is
//!    in a name), smallest first;
//! 5. the order the candidates were offered.
//!
//! It qualifies when it ends with the query's last segment, its last segment shares at least
//! half of the words of the query's last segment (`gate_proj` and `up_proj` share `proj`), or it
//! is within `max(2, len / 3)` edits (`len` in bytes; texts longer than [`MAX_LEN`] bytes are
//! compared by segments and words only). Index and wildcard segments (`<>`, `7`, `*`, `**`) and
//! a leading `^` count as neither segments nor words.

use crate::path::{bytes_equal, is_index_bytes};

/// The most suggestions returned.
pub const MAX_SUGGESTIONS: usize = 3;

/// The longest text, in bytes, whose edit distance is computed.
pub const MAX_LEN: usize = 128;

/// How near a candidate is to a query; smaller is nearer (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    different_last_segment: bool,
    missing_segments: usize,
    missing_words: usize,
    distance: usize,
}

impl Rank {
    const WORST: Rank = Rank {
        different_last_segment: true,
        missing_segments: usize::MAX,
        missing_words: usize::MAX,
        distance: usize::MAX,
    };

    const fn nearer_than(&self, other: &Rank) -> bool {
        if self.different_last_segment != other.different_last_segment {
            return !self.different_last_segment;
        }
        if self.missing_segments != other.missing_segments {
            return self.missing_segments < other.missing_segments;
        }
        if self.missing_words != other.missing_words {
            return self.missing_words < other.missing_words;
        }
        self.distance < other.distance
    }
}

/// The rank of `candidate` for `query`, or `None` when it does not qualify. A candidate equal to
/// the query (once normalized, and without its `^`) is the nearest of all: the entry named it
/// with an index that does not exist, or anchored it where it is not.
#[must_use]
pub const fn rank(query: &str, candidate: &str) -> Option<Rank> {
    let (query, candidate) = (trim_anchor(query.as_bytes()), candidate.as_bytes());
    if bytes_equal(query, candidate) {
        return Some(Rank {
            different_last_segment: false,
            missing_segments: 0,
            missing_words: 0,
            distance: 0,
        });
    }
    let (_, missing_segments) = missing(query, candidate, false);
    let (_, missing_words) = missing(query, candidate, true);
    let (stripped_query, query_len) = without_structure(query);
    let (stripped_candidate, candidate_len) = without_structure(candidate);
    let distance = if query_len <= MAX_LEN && candidate_len <= MAX_LEN {
        levenshtein(
            stripped_query.split_at(query_len).0,
            stripped_candidate.split_at(candidate_len).0,
        )
    } else {
        usize::MAX
    };
    let limit = if query_len / 3 > 2 { query_len / 3 } else { 2 };
    let same_last = same_last_segment(query, candidate);
    let (last_words, last_missing) = missing(last_segment(query), last_segment(candidate), true);
    let qualifies = same_last
        || (last_words > 0 && 2 * (last_words - last_missing) >= last_words)
        || distance <= limit;
    if qualifies {
        Some(Rank {
            different_last_segment: !same_last,
            missing_segments,
            missing_words,
            distance,
        })
    } else {
        None
    }
}

/// The nearest candidates offered so far, nearest first, at most [`MAX_SUGGESTIONS`].
#[derive(Clone, Copy, Debug)]
pub struct Nearest<T> {
    ranks: [Rank; MAX_SUGGESTIONS],
    items: [Option<T>; MAX_SUGGESTIONS],
    len: usize,
}

impl<T: Copy> Default for Nearest<T> {
    fn default() -> Self {
        Nearest::new()
    }
}

impl<T: Copy> Nearest<T> {
    /// None offered yet.
    #[must_use]
    pub const fn new() -> Nearest<T> {
        Nearest {
            ranks: [Rank::WORST; MAX_SUGGESTIONS],
            items: [None; MAX_SUGGESTIONS],
            len: 0,
        }
    }

    /// Offers a candidate with its rank; a tie goes to the candidate offered first.
    pub const fn offer(&mut self, rank: Rank, item: T) {
        let mut slot = self.len;
        while slot > 0 && rank.nearer_than(&self.ranks[slot - 1]) {
            slot -= 1;
        }
        if slot == MAX_SUGGESTIONS {
            return;
        }
        let mut at = if self.len == MAX_SUGGESTIONS {
            MAX_SUGGESTIONS - 1
        } else {
            self.len
        };
        while at > slot {
            self.ranks[at] = self.ranks[at - 1];
            self.items[at] = self.items[at - 1];
            at -= 1;
        }
        self.ranks[slot] = rank;
        self.items[slot] = Some(item);
        if self.len < MAX_SUGGESTIONS {
            self.len += 1;
        }
    }

    /// How many are kept.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether none is kept.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The kept candidate at `position` (0: the nearest).
    #[must_use]
    pub const fn get(&self, position: usize) -> Option<&T> {
        if position < self.len {
            self.items[position].as_ref()
        } else {
            None
        }
    }
}

/// Up to [`MAX_SUGGESTIONS`] distinct candidates nearest to `query`, nearest first.
///
/// ```
/// let names = ["gate", "out_proj", "up_proj", "down_proj"];
/// let nearest = moduletree::target::suggest::nearest("gate_proj", names);
/// assert_eq!(nearest, ["out_proj", "up_proj", "down_proj"]);
/// ```
#[must_use]
pub fn nearest<'c>(query: &str, candidates: impl IntoIterator<Item = &'c str>) -> Vec<&'c str> {
    let mut seen: std::collections::HashSet<&'c str> = std::collections::HashSet::new();
    let mut best = Nearest::new();
    for candidate in candidates {
        if !seen.insert(candidate) {
            continue;
        }
        if let Some(rank) = rank(query, candidate) {
            best.offer(rank, candidate);
        }
    }
    (0..best.len())
        .filter_map(|at| best.get(at).copied())
        .collect()
}

const fn trim_anchor(text: &[u8]) -> &[u8] {
    match text.split_first() {
        Some((b'^', rest)) => rest,
        _ => text,
    }
}

const fn is_separator(byte: u8, words: bool) -> bool {
    byte == b'.' || (words && (byte == b'_' || byte == b'-'))
}

/// The end of the piece starting at `start`.
const fn piece_end(text: &[u8], start: usize, words: bool) -> usize {
    let mut end = start;
    while end < text.len() && !is_separator(text[end], words) {
        end += 1;
    }
    end
}

/// Whether a piece is an index or a wildcard, which counts as neither segment nor word.
const fn is_structural(piece: &[u8]) -> bool {
    if piece.is_empty() {
        return true;
    }
    bytes_equal(piece, b"<>")
        || bytes_equal(piece, b"*")
        || bytes_equal(piece, b"**")
        || is_index_bytes(piece)
}

const fn contains_piece(text: &[u8], piece: &[u8], words: bool) -> bool {
    let mut start = 0;
    while start <= text.len() {
        let end = piece_end(text, start, words);
        if bytes_equal(text.split_at(end).0.split_at(start).1, piece) {
            return true;
        }
        start = end + 1;
    }
    false
}

/// How many pieces (segments, or words) the query has, and how many the candidate lacks.
const fn missing(query: &[u8], candidate: &[u8], words: bool) -> (usize, usize) {
    let (mut count, mut lacking) = (0, 0);
    let mut start = 0;
    while start <= query.len() {
        let end = piece_end(query, start, words);
        let piece = query.split_at(end).0.split_at(start).1;
        if !is_structural(piece) {
            count += 1;
            if !contains_piece(candidate, piece, words) {
                lacking += 1;
            }
        }
        start = end + 1;
    }
    (count, lacking)
}

const fn last_segment(text: &[u8]) -> &[u8] {
    let mut start = text.len();
    while start > 0 && text[start - 1] != b'.' {
        start -= 1;
    }
    text.split_at(start).1
}

const fn same_last_segment(query: &[u8], candidate: &[u8]) -> bool {
    let last = last_segment(query);
    !is_structural(last) && bytes_equal(last, last_segment(candidate))
}

/// The text without its index and wildcard segments (`layers.<>.q_proj` as `layers.q_proj`),
/// which are not what a typo misspells, and its length; a length above [`MAX_LEN`] when it does
/// not fit.
const fn without_structure(text: &[u8]) -> ([u8; MAX_LEN], usize) {
    let mut out = [0u8; MAX_LEN];
    let mut len = 0;
    let mut start = 0;
    while start <= text.len() {
        let end = piece_end(text, start, false);
        let piece = text.split_at(end).0.split_at(start).1;
        if !is_structural(piece) {
            if len > 0 {
                if len == MAX_LEN {
                    return (out, MAX_LEN + 1);
                }
                out[len] = b'.';
                len += 1;
            }
            if len + piece.len() > MAX_LEN {
                return (out, MAX_LEN + 1);
            }
            let mut at = 0;
            while at < piece.len() {
                out[len + at] = piece[at];
                at += 1;
            }
            len += piece.len();
        }
        start = end + 1;
    }
    (out, len)
}

/// The edit distance between two texts of at most [`MAX_LEN`] bytes.
const fn levenshtein(a: &[u8], b: &[u8]) -> usize {
    let mut previous = [0usize; MAX_LEN + 1];
    let mut current = [0usize; MAX_LEN + 1];
    let mut j = 0;
    while j <= b.len() {
        previous[j] = j;
        j += 1;
    }
    let mut i = 0;
    while i < a.len() {
        current[0] = i + 1;
        let mut j = 0;
        while j < b.len() {
            let substitution = previous[j] + if a[i] == b[j] { 0 } else { 1 };
            let deletion = previous[j + 1] + 1;
            let insertion = current[j] + 1;
            let mut best = substitution;
            if deletion < best {
                best = deletion;
            }
            if insertion < best {
                best = insertion;
            }
            current[j + 1] = best;
            j += 1;
        }
        let swap = previous;
        previous = current;
        current = swap;
        i += 1;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(levenshtein(b"kitten", b"sitting"), 3);
        assert_eq!(levenshtein(b"", b"abc"), 3);
        assert_eq!(levenshtein(b"q_proj", b"q_proj"), 0);
    }

    #[test]
    fn nearest_orders_by_words_then_distance() {
        let found = nearest("q_prj", ["v_proj", "q_proj", "o_proj", "gate"]);
        assert_eq!(found, ["q_proj", "v_proj", "o_proj"]);
        assert!(nearest("zzzzzz", ["q_proj"]).is_empty());
    }

    #[test]
    fn whole_segments_rank_before_edit_distance() {
        let found = nearest("mlp.q_proj", ["mlp.up_proj", "self_attn.q_proj"]);
        assert_eq!(found, ["self_attn.q_proj", "mlp.up_proj"]);
    }

    #[test]
    fn whole_words_rank_before_edit_distance() {
        // `gate` is one edit from `gte_proj`'s first word but shares no whole word with it.
        let found = nearest("gate_prj", ["gate", "gate_proj", "up_proj"]);
        assert_eq!(found[0], "gate_proj");
    }

    #[test]
    fn shared_words_qualify_beyond_the_edit_limit() {
        let found = nearest("gate_proj", ["out_proj", "up_proj", "down_proj", "embed"]);
        assert_eq!(found, ["out_proj", "up_proj", "down_proj"]);
    }

    #[test]
    fn indices_and_wildcards_are_not_words() {
        assert!(nearest("layers.<>.zzz", ["layers.<>.q_proj"]).is_empty());
        assert!(nearest("^zzz", ["q_proj"]).is_empty());
    }

    #[test]
    fn keeps_the_first_of_equals() {
        let found = nearest("x_proj", ["a_proj", "b_proj", "c_proj", "d_proj", "a_proj"]);
        assert_eq!(found, ["a_proj", "b_proj", "c_proj"]);
    }

    #[test]
    fn long_texts_compare_by_pieces_only() {
        let long = "a".repeat(MAX_LEN + 1);
        let query = format!("{long}.q_proj");
        assert_eq!(nearest(&query, ["self_attn.q_proj"]), ["self_attn.q_proj"]);
        // One edit apart, but too long to measure: neither segment nor word is shared.
        let near_typo = format!("{long}.abd");
        assert!(nearest(&format!("{long}.abc"), [near_typo.as_str()]).is_empty());
    }
}
