//! Compile-time matching of target entries against a type's static [`Schema`].
//!
//! [`check_entry`] is a `const fn`: the `targets!` macro evaluates it in a constant, so an entry
//! that matches no layer of the type stops the build. It reads each segment with the grammar
//! function [`Pattern::parse`](crate::target::Pattern::parse) uses (only the loop around it, which
//! keeps segments in a fixed array, is its own) and matches with the same rules as the
//! run-time matcher applied to the schema (a test checks that both agree on every test model):
//! the schema's containers are `<>`, which any index pattern matches, and its map keys `*`, which
//! any name matches. A `re:` entry cannot be checked this way and is reported as such.

use crate::kind::{Expertise, Kind};
use crate::path::{Segment, bytes_equal};
use crate::schema::{FieldSchema, Schema, Shape};
use crate::target::checked::{Suggest, Text};
use crate::target::pattern::{MAX_SEGMENTS, Shorthand};
use crate::target::suggest::Nearest;
use crate::target::syntax::{SegmentSyntax, segment_syntax};
use crate::tree::NodeInfo;

/// The run-time error's words for an unknown `all-…` shorthand.
pub(crate) const UNKNOWN_SHORTHAND: &str = "unknown shorthand: expected `all-linear`, `all-embedding`, `all-router`, `all-experts` or `all-shared-experts`";
const TOO_MANY_SEGMENTS: &str = "more than 64 segments";
const _: () = assert!(MAX_SEGMENTS == 64, "TOO_MANY_SEGMENTS names the limit");

/// Why `entry` does not parse, in the run-time error's words; `None` when it parses (or is a
/// regex or an optional entry, which `targets!` refuses for other reasons).
#[must_use]
pub const fn malformed_reason(entry: &str) -> Option<&'static str> {
    match parse(entry) {
        Parsed::Malformed(words) => Some(words),
        _ => None,
    }
}

/// The deepest schema path followed; deeper subtrees are not searched.
pub const MAX_DEPTH: usize = 64;

/// What an entry matches in a schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaCheck {
    /// At least one leaf layer (for a shorthand: a layer of its family).
    Layer,
    /// Only modules or containers.
    OnlyNonLayers,
    /// No node.
    NoMatch,
    /// The entry does not parse.
    Malformed,
    /// A `re:` entry, which is not checked.
    Regex,
    /// An optional entry (`?q_proj`), for specs shared across types: `targets!` checks one.
    Optional,
}

#[derive(Clone, Copy)]
enum Seg {
    Literal {
        start: usize,
        end: usize,
        index: Option<usize>,
    },
    AnyIndex,
    AnyOne,
    AnyRun,
}

#[derive(Clone, Copy)]
struct Segs<'e> {
    text: &'e [u8],
    anchored: bool,
    segs: [Seg; MAX_SEGMENTS],
    len: usize,
}

#[derive(Clone, Copy)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per entry during const evaluation, where nothing can be boxed"
)]
enum Target<'e> {
    Shorthand(Shorthand),
    Segments(Segs<'e>),
}

#[allow(
    clippy::large_enum_variant,
    reason = "built once per entry during const evaluation, where nothing can be boxed"
)]
enum Parsed<'e> {
    Target(Target<'e>),
    /// Why the entry does not parse, in the run-time error's words.
    Malformed(&'static str),
    Regex,
    Optional,
}

/// Whether `a[a_start..a_end]` is `b`.
const fn bytes_eq(a: &[u8], a_start: usize, a_end: usize, b: &[u8]) -> bool {
    bytes_equal(a.split_at(a_end).0.split_at(a_start).1, b)
}

const fn starts_with(text: &[u8], prefix: &[u8]) -> bool {
    text.len() >= prefix.len() && bytes_eq(text, 0, prefix.len(), prefix)
}

const fn parse_segment(text: &[u8], start: usize, end: usize) -> Result<Seg, &'static str> {
    let index = match segment_syntax(text.split_at(end).0.split_at(start).1) {
        Ok(SegmentSyntax::AnyIndex) => return Ok(Seg::AnyIndex),
        Ok(SegmentSyntax::AnyOne) => return Ok(Seg::AnyOne),
        Ok(SegmentSyntax::AnyRun) => return Ok(Seg::AnyRun),
        Ok(SegmentSyntax::Name) => None,
        Ok(SegmentSyntax::Index(index)) => Some(index),
        Err(fault) => return Err(fault.words()),
    };
    Ok(Seg::Literal { start, end, index })
}

const fn parse(entry: &str) -> Parsed<'_> {
    let text = entry.as_bytes();
    if starts_with(text, b"re:") {
        return Parsed::Regex;
    }
    // An optional entry (`?q_proj`) is for specs shared across types; `targets!` checks one.
    if starts_with(text, b"?") {
        return Parsed::Optional;
    }
    let mut shorthand = 0;
    while shorthand < Shorthand::ALL.len() {
        let candidate = Shorthand::ALL[shorthand];
        let name = candidate.name().as_bytes();
        if bytes_eq(text, 0, text.len(), name) {
            return Parsed::Target(Target::Shorthand(candidate));
        }
        shorthand += 1;
    }
    if starts_with(text, b"all-") {
        return Parsed::Malformed(UNKNOWN_SHORTHAND);
    }
    let anchored = starts_with(text, b"^");
    let mut start = if anchored { 1 } else { 0 };
    if start == text.len() {
        return Parsed::Malformed("the pattern is empty");
    }
    let mut segs = Segs {
        text,
        anchored,
        segs: [Seg::AnyRun; MAX_SEGMENTS],
        len: 0,
    };
    let mut i = start;
    loop {
        if i == text.len() || text[i] == b'.' {
            if segs.len == MAX_SEGMENTS {
                return Parsed::Malformed(TOO_MANY_SEGMENTS);
            }
            let seg = match parse_segment(text, start, i) {
                Ok(seg) => seg,
                Err(words) => return Parsed::Malformed(words),
            };
            if matches!(seg, Seg::AnyRun)
                && segs.len > 0
                && matches!(segs.segs[segs.len - 1], Seg::AnyRun)
            {
                return Parsed::Malformed("`**` directly after `**` is redundant");
            }
            segs.segs[segs.len] = seg;
            segs.len += 1;
            if i == text.len() {
                break;
            }
            start = i + 1;
        }
        i += 1;
    }
    Parsed::Target(Target::Segments(segs))
}

const fn seg_matches(pattern: &Segs<'_>, seg: Seg, segment: Segment<'_>) -> bool {
    match (seg, segment) {
        (Seg::AnyOne | Seg::AnyRun, _) => true,
        (Seg::AnyIndex, Segment::Index(_) | Segment::AnyIndex) => true,
        (Seg::AnyIndex, _) => false,
        (Seg::Literal { index, .. }, Segment::Index(actual)) => match index {
            Some(index) => index == actual,
            None => false,
        },
        (Seg::Literal { index, .. }, Segment::AnyIndex) => index.is_some(),
        (Seg::Literal { start, end, .. }, Segment::Name(name) | Segment::Key(name)) => {
            bytes_eq(pattern.text, start, end, name.as_bytes())
        }
        (Seg::Literal { index, .. }, Segment::AnyKey) => index.is_none(),
    }
}

/// The run-time glob of `pattern.rs`, written with `while` loops for const evaluation.
const fn glob(pattern: &Segs<'_>, path: &[Segment<'_>]) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut star = !pattern.anchored;
    let (mut star_p, mut star_s) = (0, 0);
    while s < path.len() {
        if p < pattern.len && matches!(pattern.segs[p], Seg::AnyRun) {
            p += 1;
            star = true;
            star_p = p;
            star_s = s;
        } else if p < pattern.len && seg_matches(pattern, pattern.segs[p], path[s]) {
            p += 1;
            s += 1;
        } else if star {
            p = star_p;
            star_s += 1;
            s = star_s;
        } else {
            return false;
        }
    }
    while p < pattern.len {
        if !matches!(pattern.segs[p], Seg::AnyRun) {
            return false;
        }
        p += 1;
    }
    true
}

struct Search<'q> {
    path: [Segment<'static>; MAX_DEPTH],
    /// In suggestion mode: the layers' tails offered to the engine.
    suggest: Option<Suggest<'q>>,
    depth: usize,
    layer: bool,
    non_layer: bool,
    /// Inside an `#[expert]` / `#[expert(shared)]` subtree.
    expert: bool,
    shared: bool,
    /// The depth of a field's own node given a role (`usize::MAX`: none), and the roles.
    role_depth: usize,
    role_head: bool,
    role_router: bool,
    /// The depth of a flattened field's own node, not visited (`usize::MAX`: none).
    hide_depth: usize,
}

const fn visit(target: &Target<'_>, info: &NodeInfo, search: &mut Search<'_>) {
    let roled = search.depth == search.role_depth;
    let kind: Option<Kind> = match info.kind() {
        Some(_) if roled && search.role_router => Some(Kind::Router),
        kind => kind,
    };
    let head = info.head || (roled && search.role_head && kind.is_some());
    if kind.is_some()
        && let Some(suggest) = &mut search.suggest
    {
        suggest.offer(search.path.split_at(search.depth).0);
        return;
    }
    let matched = match target {
        Target::Shorthand(shorthand) => match kind {
            Some(kind) => {
                let routed = search.expert || info.expert || matches!(kind, Kind::GroupedLinear);
                let expertise = if routed {
                    Expertise::Routed
                } else if search.shared || info.shared_expert {
                    Expertise::Shared
                } else {
                    Expertise::None
                };
                shorthand.selects(kind, head, expertise)
            }
            None => false,
        },
        Target::Segments(segs) => glob(segs, search.path.split_at(search.depth).0),
    };
    if matched {
        if kind.is_some() {
            search.layer = true;
        } else {
            search.non_layer = true;
        }
    }
}

const fn push(search: &mut Search<'_>, segment: Segment<'static>) -> bool {
    if search.depth == MAX_DEPTH {
        return false;
    }
    search.path[search.depth] = segment;
    search.depth += 1;
    true
}

const fn walk(schema: &Schema, target: &Target<'_>, search: &mut Search<'_>) {
    if search.layer {
        return;
    }
    if let Some(info) = &schema.info {
        let transparent_enum = match schema.shape {
            Shape::Variants(variants) => {
                let mut all = true;
                let mut i = 0;
                while i < variants.len() {
                    all &= variants[i].transparent;
                    i += 1;
                }
                all
            }
            _ => false,
        };
        let hidden =
            !transparent_enum && info.kind().is_none() && search.depth == search.hide_depth;
        if hidden {
            search.hide_depth = usize::MAX;
        } else if !transparent_enum {
            visit(target, info, search);
        }
    }
    let (expert, shared) = (search.expert, search.shared);
    if let Some(info) = &schema.info {
        search.expert |= info.expert;
        search.shared |= info.shared_expert;
    }
    match schema.shape {
        Shape::Leaf => {}
        Shape::Fields(fields) => walk_fields(fields, target, search),
        Shape::Variants(variants) => {
            let mut i = 0;
            while i < variants.len() {
                walk_fields(variants[i].fields, target, search);
                i += 1;
            }
        }
        Shape::Sequence { element, .. } => {
            if push(search, Segment::AnyIndex) {
                walk(element, target, search);
                search.depth -= 1;
            }
        }
        Shape::Tuple(elements) => {
            let mut i = 0;
            while i < elements.len() {
                if push(search, Segment::Index(i)) {
                    walk(elements[i], target, search);
                    search.depth -= 1;
                }
                i += 1;
            }
        }
        Shape::Map(value) => {
            if push(search, Segment::AnyKey) {
                walk(value, target, search);
                search.depth -= 1;
            }
        }
        Shape::Transparent(inner) => walk(inner, target, search),
    }
    search.expert = expert;
    search.shared = shared;
}

const fn walk_fields(fields: &[FieldSchema], target: &Target<'_>, search: &mut Search<'_>) {
    let mut i = 0;
    while i < fields.len() {
        let field = &fields[i].field;
        let depth = search.depth;
        let (role_depth, role_head, role_router, hide_depth) = (
            search.role_depth,
            search.role_head,
            search.role_router,
            search.hide_depth,
        );
        let mut fits = true;
        match field.index {
            _ if field.flatten => search.hide_depth = search.depth,
            Some(index) => fits = push(search, Segment::Index(index)),
            None => {
                let mut j = 0;
                while j < field.segments.len() {
                    fits &= push(search, Segment::Name(field.segments[j]));
                    j += 1;
                }
            }
        }
        let (expert, shared) = (search.expert, search.shared);
        search.expert |= field.expert;
        search.shared |= field.shared_expert;
        if field.head || field.router {
            search.role_depth = search.depth;
            search.role_head = field.head;
            search.role_router = field.router;
        }
        if fits {
            walk(fields[i].schema, target, search);
        }
        search.expert = expert;
        search.shared = shared;
        search.depth = depth;
        search.role_depth = role_depth;
        search.role_head = role_head;
        search.role_router = role_router;
        search.hide_depth = hide_depth;
        i += 1;
    }
}

/// The valid targets of `schema` nearest to `entry`, for an entry that matched no layer: the
/// tails of its layers' paths with as many segments as the entry (see
/// [`suggest`](crate::target::suggest)). `None` for an entry that does not parse, a shorthand
/// and a regex.
#[must_use]
pub const fn nearest_layers(schema: &Schema, entry: &str) -> Option<Nearest<Text>> {
    let target = match parse(entry) {
        Parsed::Target(target) => target,
        Parsed::Malformed(_) | Parsed::Regex | Parsed::Optional => return None,
    };
    let Target::Segments(segs) = &target else {
        return None;
    };
    let mut len = 0;
    let mut at = 0;
    while at < segs.len {
        if !matches!(segs.segs[at], Seg::AnyRun) {
            len += 1;
        }
        at += 1;
    }
    if len == 0 {
        return None;
    }
    let mut search = new_search(Some(Suggest::new(entry, len)));
    walk(schema, &target, &mut search);
    match search.suggest {
        Some(suggest) => Some(suggest.nearest()),
        None => None,
    }
}

const fn new_search(suggest: Option<Suggest<'_>>) -> Search<'_> {
    Search {
        path: [Segment::AnyIndex; MAX_DEPTH],
        suggest,
        depth: 0,
        layer: false,
        non_layer: false,
        expert: false,
        shared: false,
        role_depth: usize::MAX,
        role_head: false,
        role_router: false,
        hide_depth: usize::MAX,
    }
}

/// What `entry` matches among the nodes of `schema`; usable in constants.
///
/// ```
/// use moduletree::ModuleTree;
/// use moduletree::target::{SchemaCheck, check_entry};
///
/// #[derive(ModuleTree)]
/// struct Block {
///     #[layer(kind = "linear")]
///     q_proj: (),
/// }
///
/// const FOUND: SchemaCheck = check_entry(&<Vec<Block> as ModuleTree>::SCHEMA, "<>.q_proj");
/// assert_eq!(FOUND, SchemaCheck::Layer);
/// assert_eq!(check_entry(&Block::SCHEMA, "k_proj"), SchemaCheck::NoMatch);
/// ```
#[must_use]
pub const fn check_entry(schema: &Schema, entry: &str) -> SchemaCheck {
    let target = match parse(entry) {
        Parsed::Target(target) => target,
        Parsed::Malformed(_) => return SchemaCheck::Malformed,
        Parsed::Regex => return SchemaCheck::Regex,
        Parsed::Optional => return SchemaCheck::Optional,
    };
    let mut search = new_search(None);
    walk(schema, &target, &mut search);
    if search.layer {
        SchemaCheck::Layer
    } else if search.non_layer {
        SchemaCheck::OnlyNonLayers
    } else {
        SchemaCheck::NoMatch
    }
}
