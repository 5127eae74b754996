//! The compile-time check behind [`targets!`](crate::targets): the message for an entry that
//! cannot be right, built in a constant with the nearest valid targets.
//!
//! A constant can only panic with a `&str`, so the message is written into a fixed buffer
//! ([`Text`]). The suggestions come from the engine the run-time resolver uses
//! ([`suggest`](crate::target::suggest)), offered the same candidates: the tails of the type's
//! layer paths.

use crate::path::{Segment, bytes_equal, is_index_bytes};
use crate::schema::Schema;
use crate::target::pattern::Shorthand;
use crate::target::schema_match::{SchemaCheck, check_entry, malformed_reason, nearest_layers};
use crate::target::suggest::{MAX_LEN, MAX_SUGGESTIONS, Nearest, rank};

/// UTF-8 text in a fixed buffer, written in constants; a piece that does not fit is left out
/// whole, so the text stays valid.
#[derive(Clone, Copy, Debug)]
pub struct Text<const N: usize = MAX_LEN> {
    bytes: [u8; N],
    len: usize,
    /// Whether a piece was left out.
    overflow: bool,
}

impl<const N: usize> Text<N> {
    /// Empty text.
    #[must_use]
    pub const fn new() -> Self {
        Text {
            bytes: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// Appends `piece` if all of it fits.
    pub const fn push(&mut self, piece: &str) {
        let piece = piece.as_bytes();
        if self.len + piece.len() > N {
            self.overflow = true;
            return;
        }
        let mut at = 0;
        while at < piece.len() {
            self.bytes[self.len + at] = piece[at];
            at += 1;
        }
        self.len += piece.len();
    }

    /// The text.
    #[must_use]
    pub const fn as_str(&self) -> &str {
        match core::str::from_utf8(self.bytes.split_at(self.len).0) {
            Ok(text) => text,
            Err(_) => "",
        }
    }

    const fn equals(&self, other: &Self) -> bool {
        bytes_equal(self.as_str().as_bytes(), other.as_str().as_bytes())
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Text::new()
    }
}

/// The suggestion state of a schema search: the normalized query and the nearest tails so far.
#[derive(Clone, Copy)]
pub(crate) struct Suggest<'q> {
    query: Text,
    /// The query's segment count, `**` left out: the tails offered have as many.
    len: usize,
    nearest: Nearest<Text>,
    _entry: core::marker::PhantomData<&'q str>,
}

impl<'q> Suggest<'q> {
    /// `entry` with a leading `^` dropped and every index segment as `<>`, as the run-time
    /// resolver normalizes it.
    pub(crate) const fn new(entry: &'q str, len: usize) -> Self {
        let bytes = entry.as_bytes();
        let mut query = Text::new();
        let mut start = if !bytes.is_empty() && bytes[0] == b'^' {
            1
        } else {
            0
        };
        while start <= bytes.len() {
            let mut end = start;
            while end < bytes.len() && bytes[end] != b'.' {
                end += 1;
            }
            if query.len > 0 {
                query.push(".");
            }
            let piece = bytes.split_at(end).0.split_at(start).1;
            if is_index_bytes(piece) {
                query.push("<>");
            } else if let Ok(piece) = core::str::from_utf8(piece) {
                query.push(piece);
            }
            start = end + 1;
        }
        Suggest {
            query,
            len,
            nearest: Nearest::new(),
            _entry: core::marker::PhantomData,
        }
    }

    /// Offers the tail of a layer's path: its last `len` segments, widened to the name before a
    /// leading index (`experts.<>.w1`, never `<>.w1`); none when only a root index is left.
    pub(crate) const fn offer(&mut self, path: &[Segment<'_>]) {
        if self.len > path.len() {
            return;
        }
        let mut start = path.len() - self.len;
        while start > 0 && path[start].normalized().is_none() {
            start -= 1;
        }
        if path[start].normalized().is_none() {
            return;
        }
        let mut tail = Text::new();
        let mut at = start;
        while at < path.len() {
            if at > start {
                tail.push(".");
            }
            match path[at].normalized() {
                Some(name) => tail.push(name),
                None => tail.push("<>"),
            }
            at += 1;
        }
        if tail.overflow {
            return;
        }
        let mut kept = 0;
        while kept < self.nearest.len() {
            if let Some(seen) = self.nearest.get(kept)
                && seen.equals(&tail)
            {
                return;
            }
            kept += 1;
        }
        if let Some(rank) = rank(self.query.as_str(), tail.as_str()) {
            self.nearest.offer(rank, tail);
        }
    }

    pub(crate) const fn nearest(self) -> Nearest<Text> {
        self.nearest
    }
}

/// The longest message, in bytes.
pub const MESSAGE_LEN: usize = 1024;

/// Why `entry` cannot be checked against, or matches no layer of, `schema`, in words, with the
/// nearest valid targets; `None` when it matches a layer. `type_name` names the type in the
/// message.
///
/// ```
/// use moduletree::ModuleTree;
/// use moduletree::target::checked::target_message;
///
/// #[derive(ModuleTree)]
/// struct Attention {
///     #[layer(kind = "linear")]
///     q_proj: (),
///     #[layer(kind = "linear")]
///     k_proj: (),
/// }
///
/// const MESSAGE: Option<moduletree::target::checked::Text<1024>> =
///     target_message(&Attention::SCHEMA, "q_prj", "Attention");
/// assert_eq!(
///     MESSAGE.unwrap().as_str(),
///     "target `q_prj` matches no layer of `Attention`; did you mean `q_proj` or `k_proj`?"
/// );
/// ```
#[must_use]
pub const fn target_message(
    schema: &Schema,
    entry: &str,
    type_name: &str,
) -> Option<Text<MESSAGE_LEN>> {
    let mut message = Text::new();
    message.push("target `");
    message.push(entry);
    match check_entry(schema, entry) {
        SchemaCheck::Layer => return None,
        SchemaCheck::NoMatch => {
            message.push("` matches no layer of `");
            message.push(type_name);
            message.push("`");
            if let Some(nearest) = nearest_layers(schema, entry) {
                push_suggestions(&mut message, &nearest);
            }
        }
        SchemaCheck::OnlyNonLayers => {
            message.push("` matches only modules or containers of `");
            message.push(type_name);
            message.push("`, not layers");
        }
        SchemaCheck::Malformed => {
            message.push("` is not a valid pattern (checking `");
            message.push(type_name);
            message.push("`): ");
            message.push(match malformed_reason(entry) {
                Some(words) => words,
                None => "it does not parse",
            });
            if let Some(shorthand) = nearest_shorthand(entry) {
                message.push("; did you mean `");
                message.push(shorthand);
                message.push("`?");
            }
        }
        SchemaCheck::Optional => {
            message.push("` is optional, for specs shared across models; `targets!` checks `");
            message.push(type_name);
            message.push("` alone: drop the `?`");
        }
        SchemaCheck::Regex => {
            message.push("` is a regex, which `targets!` cannot check against `");
            message.push(type_name);
            message.push("`; use `TargetSpec::parse`");
        }
    }
    Some(message)
}

/// The shorthand nearest to an entry that starts with `all-` and is none, as the run-time
/// error suggests it.
const fn nearest_shorthand(entry: &str) -> Option<&'static str> {
    let bytes = entry.as_bytes();
    if bytes.len() < 4
        || bytes[0] != b'a'
        || bytes[1] != b'l'
        || bytes[2] != b'l'
        || bytes[3] != b'-'
    {
        return None;
    }
    let mut nearest: Nearest<&'static str> = Nearest::new();
    let mut at = 0;
    while at < Shorthand::ALL.len() {
        let name = Shorthand::ALL[at].name();
        if let Some(rank) = rank(entry, name) {
            nearest.offer(rank, name);
        }
        at += 1;
    }
    match nearest.get(0) {
        Some(name) => Some(*name),
        None => None,
    }
}

/// `; did you mean `a`, `b` or `c`?`, as the run-time error words it.
const fn push_suggestions(message: &mut Text<MESSAGE_LEN>, nearest: &Nearest<Text>) {
    let count = nearest.len();
    let mut at = 0;
    while at < count && at < MAX_SUGGESTIONS {
        message.push(if at == 0 {
            "; did you mean `"
        } else if at + 1 == count {
            " or `"
        } else {
            ", `"
        });
        if let Some(name) = nearest.get(at) {
            message.push(name.as_str());
        }
        message.push("`");
        at += 1;
    }
    if count > 0 {
        message.push("?");
    }
}

/// Fails the constant evaluation that calls it when `entry` matches no layer of `schema`, with
/// [`target_message`]'s words. `targets!` calls it once per entry, spanned on the entry.
#[doc(hidden)]
pub const fn check_target(schema: &Schema, entry: &str, type_name: &str) {
    if let Some(message) = target_message(schema, entry, type_name) {
        panic!("{}", message.as_str());
    }
}
