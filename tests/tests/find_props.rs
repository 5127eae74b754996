//! Property tests: `find_layers` on random trees, and `normalize` on random names.
//!
//! The trees are built at run time, so they implement `ModuleTree` by hand (no derive): modules
//! whose fields take names from a small pool (so that tails collide), lists (`Vec` containers)
//! and leaf layers of random kinds. The property is DESIGN.md §5's contract read backwards:
//! matching the names `find_layers` returns against every node, by whole segments with `<>` for
//! any index and `^` anchoring at the root, selects exactly the nodes where the condition holds,
//! and no name could be shorter.

use moduletree::{
    Field, Kind, ModuleTree, NodeInfo, Schema, Segment, Walker, WalkerMut, normalize,
};
use proptest::prelude::*;

/// Field names: few and short, so that tails collide often. `up.proj` is a dotted rename.
const NAMES: [&[&str]; 7] = [
    &["proj"],
    &["out_proj"],
    &["mlp"],
    &["layers"],
    &["experts"],
    &["up", "proj"],
    &["norm"],
];

const FIELDS: [Field; 7] = [
    Field::named(NAMES[0]),
    Field::named(NAMES[1]),
    Field::named(NAMES[2]),
    Field::named(NAMES[3]),
    Field::named(NAMES[4]),
    Field::named(NAMES[5]),
    Field::named(NAMES[6]),
];

const KINDS: [Kind; 4] = [Kind::Linear, Kind::Norm, Kind::Router, Kind::GroupedLinear];

const MODULE: NodeInfo = NodeInfo::module("RandomTree");
const LIST: NodeInfo = NodeInfo::container("Vec");

/// A module tree whose shape is decided at run time.
#[derive(Clone, Debug)]
enum RandomTree {
    /// A module whose fields are named `NAMES[index]`, in this order, with distinct names.
    Module(Vec<(usize, RandomTree)>),
    /// A `Vec` of modules.
    List(Vec<RandomTree>),
    /// A leaf layer of `KINDS[index]`.
    Layer(usize),
}

impl RandomTree {
    fn layer_info(kind: usize) -> NodeInfo {
        NodeInfo::layer("Layer", KINDS[kind])
    }
}

impl ModuleTree for RandomTree {
    // The shape is only known at run time; the property is about instances.
    const SCHEMA: Schema = Schema::NONE;

    fn walk<'a>(&'a self, walker: &mut Walker<'a, '_>) {
        match self {
            RandomTree::Module(fields) => {
                let scope = walker.enter_module(&MODULE, self);
                for (name, value) in fields {
                    walker.field(&FIELDS[*name], value);
                }
                walker.exit_module(scope);
            }
            RandomTree::List(elements) => {
                let scope = walker.enter_container(&LIST);
                for (index, element) in elements.iter().enumerate() {
                    walker.element(index, element);
                }
                walker.exit_container(scope);
            }
            RandomTree::Layer(kind) => walker.layer(&Self::layer_info(*kind), self),
        }
    }

    fn walk_mut<'a>(&'a mut self, walker: &mut WalkerMut<'a, '_>) {
        let info = match self {
            RandomTree::Layer(kind) => Self::layer_info(*kind),
            _ => MODULE,
        };
        match self {
            RandomTree::Module(_) => {
                let scope = walker.enter_module(&MODULE, self);
                if let RandomTree::Module(fields) = self {
                    for (name, value) in fields {
                        walker.field(&FIELDS[*name], value);
                    }
                }
                walker.exit_module(scope);
            }
            RandomTree::List(elements) => {
                let scope = walker.enter_container(&LIST);
                for (index, element) in elements.iter_mut().enumerate() {
                    walker.element(index, element);
                }
                walker.exit_container(scope);
            }
            RandomTree::Layer(_) => walker.layer(&info, self),
        }
    }
}

/// Modules with distinct field names (as a derive guarantees), lists that are mostly runs of
/// one element (like `nn.ModuleList`) and sometimes mixed, and leaves of every kind.
fn random_tree() -> impl Strategy<Value = RandomTree> {
    let leaf = (0..KINDS.len()).prop_map(RandomTree::Layer);
    leaf.prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            3 => prop::collection::vec((0..NAMES.len(), inner.clone()), 1..5)
                .prop_map(|fields| RandomTree::Module(distinct_names(fields))),
            1 => (inner.clone(), 1..4_usize)
                .prop_map(|(element, len)| RandomTree::List(vec![element; len])),
            1 => prop::collection::vec(inner, 1..4).prop_map(RandomTree::List),
        ]
    })
}

fn distinct_names(fields: Vec<(usize, RandomTree)>) -> Vec<(usize, RandomTree)> {
    let mut seen = Vec::new();
    fields
        .into_iter()
        .filter(|(name, _)| {
            // `up.proj` and `up` would not collide, but `proj` and `up.proj` can: keep the first
            // of two fields whose first segments are equal.
            let first = NAMES[*name][0];
            let fresh = !seen.contains(&first);
            seen.push(first);
            fresh
        })
        .collect()
}

fn random_model() -> impl Strategy<Value = RandomTree> {
    prop::collection::vec((0..NAMES.len(), random_tree()), 1..5)
        .prop_map(|fields| RandomTree::Module(distinct_names(fields)))
}

/// One walked node, owned: its raw segments (`None` for an index) and whether `cond` holds.
struct Walked {
    segments: Vec<Option<String>>,
    target: bool,
}

fn cond(node: &moduletree::Node<'_, '_>) -> bool {
    node.kind() == Some(Kind::Linear)
}

fn walked(model: &RandomTree) -> Vec<Walked> {
    let mut nodes = Vec::new();
    moduletree::walk(model, |node| {
        let segments = node
            .path()
            .segments()
            .iter()
            .map(|segment| match segment {
                Segment::Name(name) | Segment::Key(name) => Some((*name).to_owned()),
                Segment::Index(_) | Segment::AnyIndex | Segment::AnyKey => None,
            })
            .collect();
        nodes.push(Walked {
            segments,
            target: cond(node),
        });
    });
    nodes
}

/// Whether `pattern` (dot-separated, `<>` = any index, a leading `^` anchors at the root)
/// matches a trailing run of `path`'s whole segments.
fn matches(pattern: &str, path: &[Option<String>]) -> bool {
    let (anchored, pattern) = match pattern.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let pattern: Vec<&str> = if pattern.is_empty() {
        Vec::new()
    } else {
        pattern.split('.').collect()
    };
    if pattern.len() > path.len() || (anchored && pattern.len() != path.len()) {
        return false;
    }
    let tail = &path[path.len() - pattern.len()..];
    pattern
        .iter()
        .zip(tail)
        .all(|(expected, segment)| match (segment, *expected) {
            (None, "<>") => true,
            (Some(name), expected) => name == expected,
            (None, _) => false,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, max_global_rejects: 8192, ..ProptestConfig::default() })]

    #[test]
    fn find_layers_names_exactly_the_targets_and_each_name_is_shortest(model in random_model()) {
        let nodes = walked(&model);
        let target_paths: Vec<&Vec<Option<String>>> =
            nodes.iter().filter(|node| node.target).map(|node| &node.segments).collect();
        // The precondition: no target shares its normalized path with a non-target.
        prop_assume!(nodes
            .iter()
            .filter(|node| !node.target)
            .all(|node| !target_paths.contains(&&node.segments)));

        let names = moduletree::find_layers(&model, cond);

        // Exactly the targets: each node is selected by some name if and only if cond holds.
        for node in &nodes {
            let selected = names.iter().any(|name| matches(name, &node.segments));
            prop_assert_eq!(selected, node.target, "node {:?}, names {:?}", node.segments, names);
        }
        // Every name selects some target, and no name is given twice.
        for (position, name) in names.iter().enumerate() {
            prop_assert!(nodes.iter().any(|node| node.target && matches(name, &node.segments)));
            prop_assert!(!names[..position].contains(name), "{} twice in {:?}", name, names);
        }
        // Shortest: every shorter tail of a name (dropping leading segments) that starts with a
        // name also selects a non-target; an anchored name's whole path unanchored does too.
        for name in &names {
            let unanchored = name.trim_start_matches('^');
            let segments: Vec<&str> = if unanchored.is_empty() {
                Vec::new()
            } else {
                unanchored.split('.').collect()
            };
            prop_assert!(
                segments.first() != Some(&"<>") || name.starts_with('^'),
                "{} starts with an index", name
            );
            let first_shorter = usize::from(!name.starts_with('^'));
            for start in first_shorter..segments.len() {
                if segments[start] == "<>" {
                    continue;
                }
                let shorter = segments[start..].join(".");
                prop_assert!(
                    nodes.iter().any(|node| !node.target && matches(&shorter, &node.segments)),
                    "{} could be the shorter {}", name, shorter
                );
            }
        }
        // First-seen order: the names come in the order of the first target each selects.
        let first_target = |name: &String| {
            nodes.iter().position(|node| node.target && matches(name, &node.segments))
        };
        let order: Vec<Option<usize>> = names.iter().map(first_target).collect();
        prop_assert!(order.windows(2).all(|pair| pair[0] <= pair[1]), "order {:?}", order);
    }

    #[test]
    fn normalize_is_idempotent_and_replaces_exactly_the_numeric_segments(
        name in "[a-z0-9_]{0,4}(\\.[a-z0-9_]{0,4}){0,6}"
    ) {
        let normalized = normalize(&name);
        prop_assert_eq!(normalize(&normalized), normalized.clone());
        let before: Vec<&str> = name.split('.').collect();
        let after: Vec<&str> = normalized.split('.').collect();
        prop_assert_eq!(before.len(), after.len());
        for (segment, result) in before.iter().zip(&after) {
            let numeric = !segment.is_empty() && segment.bytes().all(|byte| byte.is_ascii_digit());
            if numeric {
                prop_assert_eq!(*result, "<>");
            } else {
                prop_assert_eq!(result, segment);
            }
        }
    }
}

/// The matcher of this file, checked on the cases that the property leans on.
#[test]
fn matcher_reads_names_the_way_the_contract_writes_them() {
    let path = |text: &str| -> Vec<Option<String>> {
        text.split('.')
            .map(|segment| (segment != "<>").then(|| segment.to_owned()))
            .collect()
    };
    let q_proj = path("model.layers.<>.self_attn.q_proj");
    assert!(matches("q_proj", &q_proj));
    assert!(matches("layers.<>.self_attn.q_proj", &q_proj));
    assert!(matches("^model.layers.<>.self_attn.q_proj", &q_proj));
    assert!(!matches("^layers.<>.self_attn.q_proj", &q_proj));
    assert!(!matches("proj", &q_proj));
    assert!(!matches("layers.0.self_attn.q_proj", &q_proj));
    assert!(!matches("out_proj", &path("proj")));
    assert!(matches("^", &[]));
    assert!(!matches("^", &q_proj));
}
