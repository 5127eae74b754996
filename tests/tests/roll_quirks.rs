//! The cases where ROLL's `find_layers` goes wrong, each on its own small model, with the answer
//! DESIGN.md §5 asks for.
//!
//! ROLL takes raw module names, compares raw strings (`"out_proj".endswith("proj")`), keeps a
//! stale suffix, returns one entry per layer with raw indices, and returns a set in arbitrary
//! order. Here names are normalized, compared segment by segment, unique, and in walk order.

use std::collections::HashMap;

use moduletree::{Kind, ModuleTree, Segment};
use moduletree_tests::models::Linear;

fn first_segment_is(node: &moduletree::Node<'_, '_>, name: &str) -> bool {
    node.path().segments().first() == Some(&Segment::Name(name))
}

fn is_linear(node: &moduletree::Node<'_, '_>) -> bool {
    node.kind() == Some(Kind::Linear)
}

// ------------------------------------------------------ a vision tower beside a language model

#[derive(ModuleTree)]
struct FcMlp {
    linear_fc1: Linear,
    linear_fc2: Linear,
}

#[derive(ModuleTree)]
struct VisionBlock {
    mlp: FcMlp,
}

#[derive(ModuleTree)]
struct VisionTower {
    blocks: Vec<VisionBlock>,
}

#[derive(ModuleTree)]
struct LanguageLayer {
    mlp: FcMlp,
}

#[derive(ModuleTree)]
struct LanguageModel {
    layers: Vec<LanguageLayer>,
}

#[derive(ModuleTree)]
struct VisionLanguageModel {
    visual: VisionTower,
    language_model: LanguageModel,
}

fn fc_mlp() -> FcMlp {
    FcMlp {
        linear_fc1: Linear::new(4, 8),
        linear_fc2: Linear::new(8, 4),
    }
}

fn vision_language_model(blocks: usize, layers: usize) -> VisionLanguageModel {
    VisionLanguageModel {
        visual: VisionTower {
            blocks: (0..blocks).map(|_| VisionBlock { mlp: fc_mlp() }).collect(),
        },
        language_model: LanguageModel {
            layers: (0..layers)
                .map(|_| LanguageLayer { mlp: fc_mlp() })
                .collect(),
        },
    }
}

/// ROLL returns either the bare leaf (`linear_fc1`, which also names the vision tower's) or the
/// whole raw path once per layer (`language_model.layers.0.mlp.linear_fc1`, `…1…`). The answer is
/// the shortest tail that the vision tower does not have, once for all layers.
#[test]
fn vision_tower_leaf_names_do_not_leak_into_the_language_model_targets() {
    let model = vision_language_model(3, 4);
    let targets = moduletree::find_layers(&model, |node| {
        first_segment_is(node, "language_model") && is_linear(node)
    });
    assert_eq!(
        targets,
        ["layers.<>.mlp.linear_fc1", "layers.<>.mlp.linear_fc2"]
    );
    // And the other way round: the vision tower's own name is as short.
    let vision = moduletree::find_layers(&model, |node| {
        first_segment_is(node, "visual") && is_linear(node)
    });
    assert_eq!(
        vision,
        ["blocks.<>.mlp.linear_fc1", "blocks.<>.mlp.linear_fc2"]
    );
    // Both sides together need no more than the leaf.
    assert_eq!(
        moduletree::find_all_linear_modules(&model),
        ["linear_fc1", "linear_fc2"]
    );
}

// ------------------------------------------------------ `out_proj` beside `proj`

#[derive(ModuleTree)]
struct Projections {
    proj: Linear,
    out_proj: Linear,
}

/// A raw-string suffix test says `out_proj` ends with `proj`; whole segments say it does not.
#[test]
fn proj_does_not_collide_with_out_proj() {
    let model: Vec<Projections> = (0..3)
        .map(|_| Projections {
            proj: Linear::new(4, 4),
            out_proj: Linear::new(4, 4),
        })
        .collect();
    let named = |leaf: &'static str| {
        moduletree::find_layers(&model, move |node| {
            node.path().last() == Some(Segment::Name(leaf))
        })
    };
    assert_eq!(named("proj"), ["proj"]);
    assert_eq!(named("out_proj"), ["out_proj"]);
}

// ------------------------------------------------------ numeric leaves

/// `nn.Sequential`-style numbered layers: a tuple of linears inside each decoder layer.
#[derive(ModuleTree)]
struct SequentialBlock {
    mlp: (Linear, Linear),
    #[layer(kind = "norm")]
    norm: (),
}

#[derive(ModuleTree)]
struct SequentialModel {
    layers: Vec<SequentialBlock>,
    heads: Vec<Linear>,
    #[layer(kind = "norm")]
    norms: Vec<()>,
}

/// ROLL returns `0`, `1` — names that PEFT matches against every module whose name ends in
/// `.0` or `.1`. A result here never starts with an index.
#[test]
fn numeric_leaves_never_give_a_bare_index() {
    let model = SequentialModel {
        layers: (0..3)
            .map(|_| SequentialBlock {
                mlp: (Linear::new(4, 8), Linear::new(8, 4)),
                norm: (),
            })
            .collect(),
        heads: vec![Linear::new(4, 2), Linear::new(4, 2)],
        norms: vec![(), ()],
    };
    let linear = moduletree::find_all_linear_modules(&model);
    assert_eq!(linear, ["mlp.<>", "heads.<>"]);
    for name in &linear {
        let first = name.split('.').next().unwrap();
        assert!(first != "<>" && !first.chars().all(|c| c.is_ascii_digit()));
    }
    // The decoder layers themselves are `layers.<>`, not `<>`.
    let layers = moduletree::find_layers(&model, |node| node.type_name() == "SequentialBlock");
    assert_eq!(layers, ["layers.<>"]);
}

/// Even where no other path ends with an index — a plain list of linears — the name starts at
/// the list.
#[test]
fn a_list_of_linears_is_named_by_the_list() {
    #[derive(ModuleTree)]
    struct Model {
        layers: Vec<Linear>,
    }
    let model = Model {
        layers: vec![Linear::new(2, 2), Linear::new(2, 2)],
    };
    assert_eq!(moduletree::find_all_linear_modules(&model), ["layers.<>"]);
    // A list at the root has no name to start at: the path is anchored instead.
    let root_list = vec![Linear::new(2, 2), Linear::new(2, 2)];
    assert_eq!(moduletree::find_all_linear_modules(&root_list), ["^<>"]);
}

// ------------------------------------------------------ shared experts

#[derive(ModuleTree)]
struct ExpertMlp {
    up_proj: Linear,
    down_proj: Linear,
}

#[derive(ModuleTree)]
struct SharedExpertMoe {
    #[layer(kind = "router")]
    gate: (),
    #[expert]
    experts: Vec<ExpertMlp>,
    shared_expert: ExpertMlp,
}

fn expert_mlp() -> ExpertMlp {
    ExpertMlp {
        up_proj: Linear::new(4, 8),
        down_proj: Linear::new(8, 4),
    }
}

/// A shared expert runs for every token: it is replicated, not expert-parallel, so it is not an
/// expert although its name says so.
#[test]
fn shared_experts_are_not_marked_expert() {
    let mut model = SharedExpertMoe {
        gate: (),
        experts: vec![expert_mlp(), expert_mlp()],
        shared_expert: expert_mlp(),
    };
    let marked = moduletree::set_linear_is_expert(&mut model);
    assert_eq!(
        marked,
        [
            "experts.0.up_proj",
            "experts.0.down_proj",
            "experts.1.up_proj",
            "experts.1.down_proj",
        ]
    );
    assert!(
        model
            .experts
            .iter()
            .all(|expert| expert.up_proj.is_expert && expert.down_proj.is_expert)
    );
    assert!(!model.shared_expert.up_proj.is_expert);
    assert!(!model.shared_expert.down_proj.is_expert);
    let experts: Vec<String> = moduletree::named_modules(&model)
        .into_iter()
        .filter(|module| module.is_expert())
        .map(|module| module.path().to_owned())
        .collect();
    assert_eq!(
        experts,
        [
            "experts",
            "experts.0",
            "experts.0.up_proj",
            "experts.0.down_proj",
            "experts.1",
            "experts.1.up_proj",
            "experts.1.down_proj",
        ]
    );
    // The expert layers by name: told apart from the shared expert's identical leaves.
    let expert_layers = moduletree::find_layers(&model, |node| is_linear(node) && node.is_expert());
    assert_eq!(
        expert_layers,
        ["experts.<>.up_proj", "experts.<>.down_proj"]
    );
}

// ------------------------------------------------------ trailing index and order

#[derive(ModuleTree)]
struct Ordered {
    z_proj: Linear,
    a_proj: Linear,
    m_proj: Linear,
}

/// ROLL leaves a trailing index raw (`layers.0`, one entry per layer) and returns a set. Here
/// the index is `<>`, each name comes once, and the order is the walk's, not the alphabet's or
/// a hash's.
#[test]
fn trailing_index_is_normalized_and_order_is_first_seen() {
    #[derive(ModuleTree)]
    struct Model {
        blocks: Vec<Ordered>,
    }
    let ordered = || Ordered {
        z_proj: Linear::new(1, 1),
        a_proj: Linear::new(1, 1),
        m_proj: Linear::new(1, 1),
    };
    let model = Model {
        blocks: vec![ordered(), ordered(), ordered()],
    };
    let blocks = moduletree::find_layers(&model, |node| node.type_name() == "Ordered");
    assert_eq!(blocks, ["blocks.<>"]);
    let linear = moduletree::find_all_linear_modules(&model);
    assert_eq!(linear, ["z_proj", "a_proj", "m_proj"]);
    for _ in 0..10 {
        assert_eq!(moduletree::find_all_linear_modules(&model), linear);
    }
    assert_eq!(moduletree::normalize("model.layers.0"), "model.layers.<>");
    assert_eq!(
        moduletree::normalize("layers.0.mlp.experts.17"),
        "layers.<>.mlp.experts.<>"
    );
}

/// Map keys come in key order, whatever the map's own order: a `HashMap` gives the same names,
/// in the same order, as a `BTreeMap` with the same entries.
#[test]
fn maps_are_walked_in_key_order() {
    #[derive(ModuleTree)]
    struct Adapters {
        by_task: HashMap<String, Projections>,
    }
    let mut by_task = HashMap::new();
    for task in ["summarize", "classify", "translate", "answer"] {
        by_task.insert(
            task.to_owned(),
            Projections {
                proj: Linear::new(1, 1),
                out_proj: Linear::new(1, 1),
            },
        );
    }
    let model = Adapters { by_task };
    let paths: Vec<String> = moduletree::named_modules(&model)
        .into_iter()
        .map(|module| module.path().to_owned())
        .filter(|path| path.matches('.').count() == 1)
        .collect();
    assert_eq!(
        paths,
        [
            "by_task.answer",
            "by_task.classify",
            "by_task.summarize",
            "by_task.translate",
        ]
    );
    let proj = moduletree::find_layers(&model, |node| {
        node.path().last() == Some(Segment::Name("proj"))
            && node.path().segments().get(1) == Some(&Segment::Key("classify"))
    });
    assert_eq!(proj, ["classify.proj"]);
}

// ------------------------------------------------------ anchored results

#[derive(ModuleTree)]
struct Attention {
    q_proj: Linear,
    v_proj: Linear,
}

#[derive(ModuleTree)]
struct DecoderLayer {
    self_attn: Attention,
}

#[derive(ModuleTree)]
struct Decoder {
    layers: Vec<DecoderLayer>,
}

#[derive(ModuleTree)]
struct VisionEncoder {
    model: Decoder,
}

/// A vision encoder built from the same decoder (`vision.model.layers.<>.self_attn.q_proj`) ends
/// with the text model's whole path (`model.layers.<>.self_attn.q_proj`): no tail of the text
/// model's path is its own, so the name is anchored at the root.
#[derive(ModuleTree)]
struct TwoTowers {
    model: Decoder,
    vision: VisionEncoder,
}

fn decoder(layers: usize) -> Decoder {
    Decoder {
        layers: (0..layers)
            .map(|_| DecoderLayer {
                self_attn: Attention {
                    q_proj: Linear::new(4, 4),
                    v_proj: Linear::new(4, 4),
                },
            })
            .collect(),
    }
}

#[test]
fn a_path_that_is_the_tail_of_another_is_anchored() {
    let model = TwoTowers {
        model: decoder(2),
        vision: VisionEncoder { model: decoder(2) },
    };
    let text = moduletree::find_layers(&model, |node| {
        first_segment_is(node, "model") && is_linear(node)
    });
    assert_eq!(
        text,
        [
            "^model.layers.<>.self_attn.q_proj",
            "^model.layers.<>.self_attn.v_proj",
        ]
    );
    let vision = moduletree::find_layers(&model, |node| {
        first_segment_is(node, "vision") && is_linear(node)
    });
    assert_eq!(
        vision,
        [
            "vision.model.layers.<>.self_attn.q_proj",
            "vision.model.layers.<>.self_attn.v_proj",
        ]
    );
}

mod fixture_common;
mod schema_common;

/// The full static schema of every model type of this file, pinned.
#[test]
fn schemas_are_pinned() {
    let out = schema_common::schemas(&["roll_quirks"], &[]);
    fixture_common::assert_snapshot("schemas/roll_quirks.txt", &out);
}
