//! The nodes the derive and the container impls visit, for every shape: the exact paths, in walk
//! order, with their type names, kinds, expert flags and layer indices.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use moduletree::{Kind, ModuleTree, Role, Segment, Walk, named_modules, walk, walk_mut};

/// One visited node: path, type name, kind, `is_expert`.
type Row = (&'static str, &'static str, Option<Kind>, bool);

/// The rows of every node of `model`, in walk order.
fn rows<T: Walk + ?Sized>(model: &T) -> Vec<(String, &'static str, Option<Kind>, bool)> {
    named_modules(model)
        .into_iter()
        .map(|node| {
            (
                node.path().to_owned(),
                node.type_name(),
                node.kind(),
                node.is_expert(),
            )
        })
        .collect()
}

#[track_caller]
fn assert_rows<T: Walk + ?Sized>(model: &T, expected: &[Row]) {
    let expected: Vec<_> = expected
        .iter()
        .map(|&(path, type_name, kind, expert)| (path.to_owned(), type_name, kind, expert))
        .collect();
    assert_eq!(rows(model), expected);
}

/// The paths of every node of `model`, in walk order.
fn paths<T: ModuleTree>(model: &T) -> Vec<String> {
    named_modules(model)
        .into_iter()
        .map(|node| node.path().to_owned())
        .collect()
}

const LINEAR: Option<Kind> = Some(Kind::Linear);
const NORM: Option<Kind> = Some(Kind::Norm);

#[derive(ModuleTree, Clone, Debug, PartialEq)]
#[layer(kind = "linear")]
struct Linear {
    out_features: usize,
    #[layer(expert_flag)]
    is_expert: bool,
}

fn linear() -> Linear {
    Linear {
        out_features: 4,
        is_expert: false,
    }
}

#[derive(ModuleTree, Clone, Debug, PartialEq)]
#[layer(kind = "norm")]
struct Norm {
    dim: usize,
}

// ---------------------------------------------------------------- structs

#[derive(ModuleTree)]
struct Named {
    q_proj: Linear,
    norm: Norm,
    #[tree(skip)]
    cache: Vec<f32>,
    hidden: usize,
}

#[test]
fn named_struct_fields_in_declaration_order() {
    let named = Named {
        q_proj: linear(),
        norm: Norm { dim: 4 },
        cache: vec![1.0],
        hidden: 4,
    };
    assert_rows(
        &named,
        &[
            ("", "Named", None, false),
            ("q_proj", "Linear", LINEAR, false),
            ("norm", "Norm", NORM, false),
        ],
    );
    assert_eq!((named.cache.len(), named.hidden), (1, 4));
    let roles: Vec<Role> = named_modules(&named)
        .into_iter()
        .map(|node| node.role())
        .collect();
    assert_eq!(
        roles,
        [
            Role::Module,
            Role::Layer(Kind::Linear),
            Role::Layer(Kind::Norm)
        ]
    );
}

#[derive(ModuleTree)]
struct Pair(Linear, #[tree(skip)] u8, Norm);

#[test]
fn tuple_struct_fields_are_index_segments() {
    let pair = Pair(linear(), 7, Norm { dim: 4 });
    assert_eq!(pair.1, 7);
    assert_rows(
        &pair,
        &[
            ("", "Pair", None, false),
            ("0", "Linear", LINEAR, false),
            ("2", "Norm", NORM, false),
        ],
    );
    let mut segments = Vec::new();
    walk(&pair, |node| segments.push(node.path().segments().to_vec()));
    assert_eq!(
        segments,
        [vec![], vec![Segment::Index(0)], vec![Segment::Index(2)]]
    );
}

#[derive(ModuleTree)]
struct Unit;

#[derive(ModuleTree)]
struct HoldsUnit {
    unit: Unit,
}

#[test]
fn unit_struct_is_a_module_without_children() {
    assert_rows(&Unit, &[("", "Unit", None, false)]);
    assert_rows(
        &HoldsUnit { unit: Unit },
        &[
            ("", "HoldsUnit", None, false),
            ("unit", "Unit", None, false),
        ],
    );
}

// ---------------------------------------------------------------- enums

#[derive(ModuleTree)]
enum Mlp {
    /// A newtype variant: transparent.
    Dense(Linear),
    /// A struct variant: the enum is a node, the fields its children.
    Gated { gate: Linear, up: Linear },
    /// A tuple variant: positional children.
    Pair(Linear, Norm),
    /// A unit variant: a node without children.
    Identity,
    /// A newtype variant whose one field is skipped: a node without children.
    Cached(#[tree(skip)] Vec<f32>),
}

#[derive(ModuleTree)]
struct Block {
    mlp: Mlp,
}

#[test]
fn newtype_variant_is_transparent() {
    assert_rows(
        &Block {
            mlp: Mlp::Dense(linear()),
        },
        &[("", "Block", None, false), ("mlp", "Linear", LINEAR, false)],
    );
    // At the root, the variant's content is the root.
    assert_rows(&Mlp::Dense(linear()), &[("", "Linear", LINEAR, false)]);
}

#[test]
fn struct_variant_makes_the_enum_a_node() {
    let block = Block {
        mlp: Mlp::Gated {
            gate: linear(),
            up: linear(),
        },
    };
    assert_rows(
        &block,
        &[
            ("", "Block", None, false),
            ("mlp", "Mlp", None, false),
            ("mlp.gate", "Linear", LINEAR, false),
            ("mlp.up", "Linear", LINEAR, false),
        ],
    );
}

#[test]
fn tuple_variant_children_are_index_segments() {
    let block = Block {
        mlp: Mlp::Pair(linear(), Norm { dim: 4 }),
    };
    assert_rows(
        &block,
        &[
            ("", "Block", None, false),
            ("mlp", "Mlp", None, false),
            ("mlp.0", "Linear", LINEAR, false),
            ("mlp.1", "Norm", NORM, false),
        ],
    );
}

#[test]
fn unit_variant_is_a_node_without_children() {
    let block = Block { mlp: Mlp::Identity };
    assert_rows(
        &block,
        &[("", "Block", None, false), ("mlp", "Mlp", None, false)],
    );
    let cached = Block {
        mlp: Mlp::Cached(vec![1.0]),
    };
    assert!(matches!(&cached.mlp, Mlp::Cached(cache) if cache.len() == 1));
    assert_rows(
        &cached,
        &[("", "Block", None, false), ("mlp", "Mlp", None, false)],
    );
}

#[derive(ModuleTree)]
#[expert]
enum Experts {
    Listed(Vec<Linear>),
    Fused {
        #[layer(kind = "grouped_linear")]
        gate_up_proj: [f32; 2],
    },
}

#[test]
fn expert_enum_marks_the_content_of_every_variant() {
    assert_rows(
        &Experts::Listed(vec![linear()]),
        &[("", "Vec", None, true), ("0", "Linear", LINEAR, true)],
    );
    assert_rows(
        &Experts::Fused {
            gate_up_proj: [0.0; 2],
        },
        &[
            ("", "Experts", None, true),
            ("gate_up_proj", "[f32;2]", Some(Kind::GroupedLinear), true),
        ],
    );
}

// ---------------------------------------------------------------- names

#[derive(ModuleTree)]
struct RawNames {
    r#type: Linear,
    #[layer(kind = "norm")]
    r#in: f32,
    r#mod: Pair,
}

#[test]
fn raw_identifiers_lose_their_prefix() {
    let raw = RawNames {
        r#type: linear(),
        r#in: 1.0,
        r#mod: Pair(linear(), 0, Norm { dim: 4 }),
    };
    assert_rows(
        &raw,
        &[
            ("", "RawNames", None, false),
            ("type", "Linear", LINEAR, false),
            ("in", "f32", NORM, false),
            ("mod", "Pair", None, false),
            ("mod.0", "Linear", LINEAR, false),
            ("mod.2", "Norm", NORM, false),
        ],
    );
}

#[derive(ModuleTree)]
struct Renamed {
    #[tree(rename = "model.layers")]
    layers: Vec<Linear>,
    #[tree(rename = "lm_head")]
    head: Linear,
    #[tree(rename = "a.b.c")]
    deep: Norm,
}

#[test]
fn dotted_renames_add_one_segment_per_part() {
    let renamed = Renamed {
        layers: vec![linear()],
        head: linear(),
        deep: Norm { dim: 4 },
    };
    assert_rows(
        &renamed,
        &[
            ("", "Renamed", None, false),
            ("model.layers", "Vec", None, false),
            ("model.layers.0", "Linear", LINEAR, false),
            ("lm_head", "Linear", LINEAR, false),
            ("a.b.c", "Norm", NORM, false),
        ],
    );
    let mut segments = Vec::new();
    walk(&renamed, |node| {
        if node.path().to_string() == "model.layers.0" {
            segments = node.path().segments().to_vec();
        }
    });
    assert_eq!(
        segments,
        [
            Segment::Name("model"),
            Segment::Name("layers"),
            Segment::Index(0)
        ]
    );
}

/// Foreign types tagged `#[layer]` on a field: the type name is the last path segment, or the
/// type as written.
#[derive(ModuleTree)]
struct ForeignLayers {
    #[layer(kind = "linear")]
    array: [f32; 2],
    #[layer(kind = "linear")]
    tuple: (u8, u16),
    #[layer(kind = "linear")]
    reference: &'static str,
    #[layer(kind = "linear")]
    pointer: *const u8,
    #[layer(kind = "linear")]
    function: fn(f32) -> f32,
    #[layer(kind = "linear")]
    boxed: Box<dyn Fn(f32) -> f32>,
    #[layer(kind = "linear")]
    optional: Option<Linear>,
    #[layer(kind = "linear")]
    qualified: std::cell::Cell<f32>,
}

#[test]
fn field_layers_name_their_type() {
    let layers = ForeignLayers {
        array: [0.0; 2],
        tuple: (0, 0),
        reference: "",
        pointer: std::ptr::null(),
        function: |x| x,
        boxed: Box::new(|x| x),
        // `None` is still a leaf: the field is the layer, whatever it holds.
        optional: None,
        qualified: std::cell::Cell::new(0.0),
    };
    assert_rows(
        &layers,
        &[
            ("", "ForeignLayers", None, false),
            ("array", "[f32;2]", LINEAR, false),
            ("tuple", "(u8,u16)", LINEAR, false),
            ("reference", "str", LINEAR, false),
            ("pointer", "*const u8", LINEAR, false),
            ("function", "fn(f32)->f32", LINEAR, false),
            ("boxed", "Box", LINEAR, false),
            ("optional", "Option", LINEAR, false),
            ("qualified", "Cell", LINEAR, false),
        ],
    );
}

/// Field layers with the same facts, which the derive writes once per type, beside fields that
/// differ from them by kind alone, by type alone, and by a flag.
#[derive(ModuleTree)]
struct SharedFacts {
    #[layer(kind = "linear")]
    q_proj: Vec<f32>,
    #[layer(kind = "linear")]
    k_proj: Vec<f32>,
    #[layer(kind = "norm")]
    norm: Vec<f32>,
    #[layer(kind = "linear")]
    array: [f32; 2],
    #[layer(kind = "linear", head)]
    lm_head: Vec<f32>,
    #[layer(kind = "linear")]
    v_proj: Vec<f32>,
}

#[derive(ModuleTree)]
enum SharedFactsInVariants {
    Attention {
        #[layer(kind = "linear")]
        q_proj: Vec<f32>,
        #[layer(kind = "norm")]
        norm: Vec<f32>,
    },
    Mlp {
        #[layer(kind = "norm")]
        norm: Vec<f32>,
        #[layer(kind = "linear")]
        up_proj: Vec<f32>,
    },
}

#[test]
fn field_layers_with_the_same_facts_keep_their_own() {
    let model = SharedFacts {
        q_proj: vec![],
        k_proj: vec![],
        norm: vec![],
        array: [0.0; 2],
        lm_head: vec![],
        v_proj: vec![],
    };
    let expected: &[Row] = &[
        ("", "SharedFacts", None, false),
        ("q_proj", "Vec", LINEAR, false),
        ("k_proj", "Vec", LINEAR, false),
        ("norm", "Vec", NORM, false),
        ("array", "[f32;2]", LINEAR, false),
        ("lm_head", "Vec", LINEAR, false),
        ("v_proj", "Vec", LINEAR, false),
    ];
    assert_rows(&model, expected);
    assert_rows(&SharedFacts::SCHEMA, expected);
    let heads: Vec<String> = named_modules(&model)
        .into_iter()
        .filter(|node| node.is_head())
        .map(|node| node.path().to_owned())
        .collect();
    assert_eq!(heads, ["lm_head"]);

    let mlp = SharedFactsInVariants::Mlp {
        norm: vec![],
        up_proj: vec![],
    };
    assert_rows(
        &mlp,
        &[
            ("", "SharedFactsInVariants", None, false),
            ("norm", "Vec", NORM, false),
            ("up_proj", "Vec", LINEAR, false),
        ],
    );
    let attention = SharedFactsInVariants::Attention {
        q_proj: vec![],
        norm: vec![],
    };
    assert_rows(
        &attention,
        &[
            ("", "SharedFactsInVariants", None, false),
            ("q_proj", "Vec", LINEAR, false),
            ("norm", "Vec", NORM, false),
        ],
    );
}

// ---------------------------------------------------------------- containers

#[derive(ModuleTree)]
struct Sequences {
    list: Vec<Linear>,
    empty: Vec<Linear>,
    array: [Norm; 2],
    pair: (Linear, Norm),
    nested: Vec<Vec<Linear>>,
}

#[test]
fn vec_array_and_tuple_are_container_nodes_with_index_segments() {
    let sequences = Sequences {
        list: vec![linear(), linear()],
        empty: vec![],
        array: [Norm { dim: 1 }, Norm { dim: 2 }],
        pair: (linear(), Norm { dim: 3 }),
        nested: vec![vec![], vec![linear()]],
    };
    assert_rows(
        &sequences,
        &[
            ("", "Sequences", None, false),
            ("list", "Vec", None, false),
            ("list.0", "Linear", LINEAR, false),
            ("list.1", "Linear", LINEAR, false),
            ("empty", "Vec", None, false),
            ("array", "array", None, false),
            ("array.0", "Norm", NORM, false),
            ("array.1", "Norm", NORM, false),
            ("pair", "tuple", None, false),
            ("pair.0", "Linear", LINEAR, false),
            ("pair.1", "Norm", NORM, false),
            ("nested", "Vec", None, false),
            ("nested.0", "Vec", None, false),
            ("nested.1", "Vec", None, false),
            ("nested.1.0", "Linear", LINEAR, false),
        ],
    );
    let containers: Vec<String> = named_modules(&sequences)
        .into_iter()
        .filter(|node| node.role() == Role::Container)
        .map(|node| node.normalized().to_string())
        .collect();
    assert_eq!(
        containers,
        [
            "list",
            "empty",
            "array",
            "pair",
            "nested",
            "nested.<>",
            "nested.<>"
        ]
    );
}

#[derive(ModuleTree)]
struct Wrappers {
    some: Option<Linear>,
    none: Option<Linear>,
    boxed: Box<Norm>,
    arc: Arc<Linear>,
    rc: Rc<Norm>,
    stacked: Arc<Option<Box<Linear>>>,
}

#[test]
fn option_box_arc_and_rc_are_transparent() {
    let wrappers = Wrappers {
        some: Some(linear()),
        none: None,
        boxed: Box::new(Norm { dim: 1 }),
        arc: Arc::new(linear()),
        rc: Rc::new(Norm { dim: 2 }),
        stacked: Arc::new(Some(Box::new(linear()))),
    };
    assert_rows(
        &wrappers,
        &[
            ("", "Wrappers", None, false),
            ("some", "Linear", LINEAR, false),
            ("boxed", "Norm", NORM, false),
            ("arc", "Linear", LINEAR, false),
            ("rc", "Norm", NORM, false),
            ("stacked", "Linear", LINEAR, false),
        ],
    );
    assert_rows(&None::<Linear>, &[]);
    assert_rows(&Some(Box::new(linear())), &[("", "Linear", LINEAR, false)]);
}

#[derive(ModuleTree)]
struct Maps {
    btree: BTreeMap<String, Linear>,
    hash: HashMap<String, Norm>,
}

#[test]
fn maps_add_key_segments_in_key_order() {
    let mut btree = BTreeMap::new();
    let mut hash = HashMap::new();
    for key in ["v_proj", "q_proj", "k_proj", "10", "9"] {
        btree.insert(key.to_owned(), linear());
        hash.insert(key.to_owned(), Norm { dim: 1 });
    }
    let maps = Maps { btree, hash };
    assert_rows(
        &maps,
        &[
            ("", "Maps", None, false),
            ("btree", "BTreeMap", None, false),
            ("btree.10", "Linear", LINEAR, false),
            ("btree.9", "Linear", LINEAR, false),
            ("btree.k_proj", "Linear", LINEAR, false),
            ("btree.q_proj", "Linear", LINEAR, false),
            ("btree.v_proj", "Linear", LINEAR, false),
            ("hash", "HashMap", None, false),
            ("hash.10", "Norm", NORM, false),
            ("hash.9", "Norm", NORM, false),
            ("hash.k_proj", "Norm", NORM, false),
            ("hash.q_proj", "Norm", NORM, false),
            ("hash.v_proj", "Norm", NORM, false),
        ],
    );
    // A key is a key, never an index, even when it is all digits.
    let mut keys = Vec::new();
    walk(&maps, |node| {
        if let Some(segment @ Segment::Key(_)) = node.path().last() {
            keys.push(segment);
        }
    });
    assert_eq!(keys.len(), 10);
    assert_eq!(keys[0], Segment::Key("10"));
    let normalized: Vec<String> = named_modules(&maps)
        .into_iter()
        .map(|node| node.normalized().to_string())
        .collect();
    assert!(normalized.contains(&"btree.10".to_owned()));
    assert!(!normalized.iter().any(|path| path.contains("<>")));
}

// ---------------------------------------------------------------- experts

#[derive(ModuleTree)]
#[expert]
struct RoutedExpert {
    w1: Linear,
    w2: Linear,
}

#[derive(ModuleTree)]
struct Moe {
    #[layer(kind = "router")]
    gate: Linear,
    #[expert]
    experts: Vec<Linear>,
    shared_expert: Linear,
    routed: RoutedExpert,
    #[layer(kind = "grouped_linear")]
    fused: [f32; 2],
    #[expert]
    #[layer(kind = "linear")]
    expert_leaf: [f32; 2],
}

#[test]
fn expert_on_a_field_and_on_a_type() {
    let moe = Moe {
        gate: linear(),
        experts: vec![linear(), linear()],
        shared_expert: linear(),
        routed: RoutedExpert {
            w1: linear(),
            w2: linear(),
        },
        fused: [0.0; 2],
        expert_leaf: [0.0; 2],
    };
    assert_rows(
        &moe,
        &[
            ("", "Moe", None, false),
            ("gate", "Linear", Some(Kind::Router), false),
            ("experts", "Vec", None, true),
            ("experts.0", "Linear", LINEAR, true),
            ("experts.1", "Linear", LINEAR, true),
            ("shared_expert", "Linear", LINEAR, false),
            ("routed", "RoutedExpert", None, true),
            ("routed.w1", "Linear", LINEAR, true),
            ("routed.w2", "Linear", LINEAR, true),
            // `grouped_linear` is always an expert.
            ("fused", "[f32;2]", Some(Kind::GroupedLinear), true),
            ("expert_leaf", "[f32;2]", LINEAR, true),
        ],
    );
}

// ---------------------------------------------------------------- layer index

#[derive(ModuleTree)]
struct Stage {
    #[layer(kind = "norm")]
    norm: (),
    #[tree(layers)]
    blocks: Vec<Vec<Linear>>,
}

#[derive(ModuleTree)]
struct Pipeline {
    stages: Vec<Stage>,
    plain: Vec<Vec<Linear>>,
}

#[test]
fn tree_layers_picks_the_index_that_is_the_layer_index() {
    let stage = || Stage {
        norm: (),
        blocks: vec![vec![linear()], vec![linear(), linear()]],
    };
    let pipeline = Pipeline {
        stages: vec![stage(), stage()],
        plain: vec![vec![], vec![linear()]],
    };
    let indices: Vec<(String, Option<usize>)> = named_modules(&pipeline)
        .into_iter()
        .map(|node| (node.path().to_owned(), node.layer_index()))
        .collect();
    let expected: Vec<(String, Option<usize>)> = [
        ("", None),
        ("stages", None),
        // Outside a `#[tree(layers)]` container: the first index of the path.
        ("stages.0", Some(0)),
        ("stages.0.norm", Some(0)),
        // The container itself has no index of its own.
        ("stages.0.blocks", None),
        // Below it: the index right under `blocks`, not the stage's.
        ("stages.0.blocks.0", Some(0)),
        ("stages.0.blocks.0.0", Some(0)),
        ("stages.0.blocks.1", Some(1)),
        ("stages.0.blocks.1.0", Some(1)),
        ("stages.0.blocks.1.1", Some(1)),
        ("stages.1", Some(1)),
        ("stages.1.norm", Some(1)),
        ("stages.1.blocks", None),
        ("stages.1.blocks.0", Some(0)),
        ("stages.1.blocks.0.0", Some(0)),
        ("stages.1.blocks.1", Some(1)),
        ("stages.1.blocks.1.0", Some(1)),
        ("stages.1.blocks.1.1", Some(1)),
        ("plain", None),
        ("plain.0", Some(0)),
        ("plain.1", Some(1)),
        // Without the mark, the first index wins.
        ("plain.1.0", Some(1)),
    ]
    .into_iter()
    .map(|(path, index)| (path.to_owned(), index))
    .collect();
    assert_eq!(indices, expected);
}

// ---------------------------------------------------------------- mutable walks

#[derive(ModuleTree)]
struct Mutable {
    q_proj: Linear,
    #[expert]
    experts: Vec<Linear>,
    #[layer(kind = "linear")]
    foreign: [f32; 2],
    shared: Arc<Linear>,
    norm: Norm,
}

fn mutable() -> Mutable {
    Mutable {
        q_proj: linear(),
        experts: vec![linear(), linear()],
        foreign: [0.0; 2],
        shared: Arc::new(linear()),
        norm: Norm { dim: 4 },
    }
}

#[test]
fn walk_mut_visits_the_same_nodes_as_walk() {
    let mut model = mutable();
    let shared = paths(&model);
    let mut visited = Vec::new();
    walk_mut(&mut model, |node| visited.push(node.path().to_string()));
    assert_eq!(visited, shared);
    assert_eq!(
        visited,
        [
            "",
            "q_proj",
            "experts",
            "experts.0",
            "experts.1",
            "foreign",
            "shared",
            "norm"
        ]
    );
}

#[test]
fn downcast_mut_changes_a_leaf() {
    let mut model = mutable();
    let mut downcast = Vec::new();
    walk_mut(&mut model, |node| {
        let path = node.path().to_string();
        if let Some(linear) = node.downcast_mut::<Linear>() {
            linear.out_features = 8;
            downcast.push(path);
        } else if let Some(foreign) = node.downcast_mut::<[f32; 2]>() {
            foreign[1] = 1.5;
            downcast.push(path);
        } else if let Some(norm) = node.downcast_mut::<Norm>() {
            norm.dim = 16;
            downcast.push(path);
        }
    });
    // The `Arc`'s content is read-only: it is visited, but cannot be borrowed mutably.
    assert_eq!(
        downcast,
        ["q_proj", "experts.0", "experts.1", "foreign", "norm"]
    );
    assert_eq!(model.q_proj.out_features, 8);
    assert!(model.experts.iter().all(|expert| expert.out_features == 8));
    assert_eq!(model.foreign, [0.0, 1.5]);
    assert_eq!(model.norm.dim, 16);
    assert_eq!(model.shared.out_features, 4);
}

#[test]
fn downcast_to_the_wrong_type_is_none() {
    let mut model = mutable();
    let mut root_is_mutable = false;
    walk_mut(&mut model, |node| {
        if node.path().is_root() {
            root_is_mutable = node.downcast_mut::<Mutable>().is_some();
        } else {
            assert!(node.downcast_mut::<Mutable>().is_none());
        }
        assert!(node.downcast_mut::<String>().is_none());
    });
    assert!(root_is_mutable);
}

#[test]
fn downcast_ref_in_a_shared_walk() {
    let model = mutable();
    let mut widths = Vec::new();
    walk(&model, |node| {
        if let Some(linear) = node.downcast_ref::<Linear>() {
            widths.push((node.path().to_string(), linear.out_features));
        }
    });
    assert_eq!(
        widths,
        [
            ("q_proj".to_owned(), 4),
            ("experts.0".to_owned(), 4),
            ("experts.1".to_owned(), 4),
            ("shared".to_owned(), 4),
        ]
    );
}

#[test]
fn set_expert_flag_on_an_expert_flag_leaf() {
    let mut model = mutable();
    let mut set = Vec::new();
    walk_mut(&mut model, |node| {
        if node.is_expert() && node.set_expert_flag(true) {
            set.push(node.path().to_string());
        }
    });
    assert_eq!(set, ["experts.0", "experts.1"]);
    assert!(model.experts.iter().all(|expert| expert.is_expert));
    assert!(!model.q_proj.is_expert);

    // Leaves without a flag field, modules, containers and read-only leaves hold no flag.
    let mut refused = Vec::new();
    walk_mut(&mut model, |node| {
        if !node.set_expert_flag(true) {
            refused.push(node.path().to_string());
        }
    });
    assert_eq!(refused, ["", "experts", "foreign", "shared", "norm"]);
    assert!(model.q_proj.is_expert);
    assert!(!model.shared.is_expert);

    let mut cleared = 0;
    walk_mut(&mut model, |node| {
        if node.set_expert_flag(false) {
            cleared += 1;
        }
    });
    assert_eq!(cleared, 3);
    assert!(!model.q_proj.is_expert);
}

#[test]
fn set_linear_is_expert_marks_linear_leaves_under_experts() {
    let mut model = mutable();
    let marked = moduletree::set_linear_is_expert(&mut model);
    assert_eq!(marked, ["experts.0", "experts.1"]);
    assert!(model.experts.iter().all(|expert| expert.is_expert));
    assert!(!model.q_proj.is_expert);
}

mod fixture_common;
mod schema_common;

/// The full static schema of every model type of this file, pinned.
#[test]
fn schemas_are_pinned() {
    let out = schema_common::schemas(&["shapes"], &[]);
    fixture_common::assert_snapshot("schemas/shapes.txt", &out);
}
