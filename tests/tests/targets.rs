//! Target specs resolved against the test models: every rule of the grammar, the layer filter,
//! exclusions, ranks and alphas, and the errors that tell a wrong entry apart.

use moduletree::Kind;
use moduletree::target::{
    Pattern, PatternErrorKind, Resolution, ResolveError, TargetError, TargetSpec, TargetWarning,
};
use moduletree_tests::models::{deepseek_v3, llama, mixtral, qwen2_moe};

fn resolve<T: moduletree::Walk + ?Sized>(entries: &[&str], model: &T) -> Resolution {
    TargetSpec::parse(entries)
        .unwrap()
        .resolve(model)
        .unwrap_or_else(|error| panic!("{entries:?}: {error}"))
}

fn paths(resolution: &Resolution) -> Vec<&str> {
    resolution.paths().collect()
}

fn errors<T: moduletree::Walk + ?Sized>(spec: &TargetSpec, model: &T) -> Vec<TargetError> {
    match spec.resolve(model) {
        Ok(resolution) => panic!("expected an error, selected {:?}", paths(&resolution)),
        Err(ResolveError { errors }) => errors,
    }
}

#[test]
fn leaf_name_matches_whole_last_segment_in_every_layer() {
    let model = llama(2);
    let resolution = resolve(&["q_proj"], &model);
    assert_eq!(
        paths(&resolution),
        [
            "model.layers.0.self_attn.q_proj",
            "model.layers.1.self_attn.q_proj"
        ]
    );
    let layer = &resolution.layers()[1];
    assert_eq!(&*layer.normalized, "model.layers.<>.self_attn.q_proj");
    assert_eq!(layer.kind, Kind::Linear);
    assert_eq!(layer.layer_index, Some(1));
    assert!(!layer.is_expert);
    assert_eq!((layer.rank, layer.alpha), (8, 8.0));
    assert_eq!(resolution.entries()[0].selected, 2);
}

#[test]
fn segments_are_compared_whole() {
    #[derive(moduletree::ModuleTree)]
    struct Attention {
        #[layer(kind = "linear")]
        proj: (),
        #[layer(kind = "linear")]
        out_proj: (),
        #[layer(kind = "linear")]
        qq_proj: (),
        #[layer(kind = "norm")]
        q_proj_norm: (),
        #[layer(kind = "linear")]
        q_proj: (),
    }
    let model = Attention {
        proj: (),
        out_proj: (),
        qq_proj: (),
        q_proj_norm: (),
        q_proj: (),
    };
    assert_eq!(paths(&resolve(&["proj"], &model)), ["proj"]);
    assert_eq!(paths(&resolve(&["q_proj"], &model)), ["q_proj"]);
}

#[test]
fn index_literal_matches_only_that_index() {
    let model = llama(12);
    let resolution = resolve(&["layers.1.self_attn.q_proj"], &model);
    assert_eq!(paths(&resolution), ["model.layers.1.self_attn.q_proj"]);
    let resolution = resolve(&["layers.10.mlp.down_proj"], &model);
    assert_eq!(paths(&resolution), ["model.layers.10.mlp.down_proj"]);
}

#[test]
fn wildcards_and_anchor() {
    let model = mixtral(2, 3);
    let any_index = resolve(&["layers.<>.block_sparse_moe.experts.<>.w1"], &model);
    assert_eq!(any_index.layers().len(), 6);
    let any_one = resolve(&["experts.*.w2"], &model);
    assert_eq!(any_one.layers().len(), 6);
    assert!(any_one.layers().iter().all(|layer| layer.is_expert));
    let run = resolve(&["model.**.w3"], &model);
    assert_eq!(run.layers().len(), 6);
    // `**` also matches an empty run.
    let empty_run = resolve(&["self_attn.**.q_proj"], &model);
    assert_eq!(empty_run.layers().len(), 2);
    // Anchored: the whole path from the root.
    assert_eq!(paths(&resolve(&["^lm_head"], &model)), ["lm_head"]);
    let anchored = TargetSpec::parse(["^q_proj"]).unwrap();
    assert!(matches!(
        errors(&anchored, &model)[0],
        TargetError::NoMatch { .. }
    ));
    // `<>` never matches a name, `*` never more than one segment.
    assert!(matches!(
        errors(&TargetSpec::parse(["model.<>.layers"]).unwrap(), &model)[0],
        TargetError::NoMatch { .. }
    ));
    assert!(matches!(
        errors(
            &TargetSpec::parse(["^model.*.self_attn.q_proj"]).unwrap(),
            &model
        )[0],
        TargetError::NoMatch { .. }
    ));
}

#[test]
fn all_linear_leaves_out_heads_and_routers() {
    let model = mixtral(1, 2);
    let resolution = resolve(&["all-linear"], &model);
    assert_eq!(
        paths(&resolution),
        [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.k_proj",
            "model.layers.0.self_attn.v_proj",
            "model.layers.0.self_attn.o_proj",
            "model.layers.0.block_sparse_moe.experts.0.w1",
            "model.layers.0.block_sparse_moe.experts.0.w2",
            "model.layers.0.block_sparse_moe.experts.0.w3",
            "model.layers.0.block_sparse_moe.experts.1.w1",
            "model.layers.0.block_sparse_moe.experts.1.w2",
            "model.layers.0.block_sparse_moe.experts.1.w3",
        ]
    );
    assert_eq!(
        paths(&resolve(&["all-router"], &model)),
        ["model.layers.0.block_sparse_moe.gate"]
    );
    assert_eq!(
        paths(&resolve(&["all-embedding"], &model)),
        ["model.embed_tokens"]
    );
    // The head is still reachable by name.
    assert_eq!(paths(&resolve(&["lm_head"], &model)), ["lm_head"]);
}

#[test]
fn all_linear_on_fused_experts_marks_them_experts() {
    let model = deepseek_v3(2, 1, 4, true);
    let resolution = resolve(&["all-linear"], &model);
    let fused: Vec<_> = resolution
        .layers()
        .iter()
        .filter(|layer| layer.kind == Kind::GroupedLinear)
        .map(|layer| (layer.path.as_str(), layer.is_expert))
        .collect();
    assert_eq!(
        fused,
        [
            ("model.layers.1.mlp.experts.gate_up_proj", true),
            ("model.layers.1.mlp.experts.down_proj", true)
        ]
    );
    // The shared expert is not a routed expert.
    let shared = resolve(&["shared_experts.up_proj"], &model);
    assert!(!shared.layers()[0].is_expert);
}

#[test]
fn layer_filter_uses_the_layer_index_never_the_expert_index() {
    let model = mixtral(3, 4);
    let spec = TargetSpec::parse(["w1", "q_proj"])
        .unwrap()
        .with_layers([1]);
    let resolution = spec.resolve(&model).unwrap();
    assert_eq!(
        paths(&resolution),
        [
            "model.layers.1.self_attn.q_proj",
            "model.layers.1.block_sparse_moe.experts.0.w1",
            "model.layers.1.block_sparse_moe.experts.1.w1",
            "model.layers.1.block_sparse_moe.experts.2.w1",
            "model.layers.1.block_sparse_moe.experts.3.w1",
        ]
    );
    assert_eq!(resolution.entries()[0].filtered, 8);
    assert!(
        resolution
            .layers()
            .iter()
            .all(|layer| layer.layer_index == Some(1))
    );
}

#[test]
fn layer_filter_on_qwen_mixes_dense_and_sparse_layers() {
    let model = qwen2_moe(3, 2, &[0]);
    let spec = TargetSpec::parse(["gate_proj"])
        .unwrap()
        .with_layers([0, 2]);
    let resolution = spec.resolve(&model).unwrap();
    assert_eq!(
        paths(&resolution),
        [
            "model.layers.0.mlp.gate_proj",
            "model.layers.2.mlp.experts.0.gate_proj",
            "model.layers.2.mlp.experts.1.gate_proj",
            "model.layers.2.mlp.shared_expert.gate_proj",
        ]
    );
    let experts: Vec<bool> = resolution
        .layers()
        .iter()
        .map(|layer| layer.is_expert)
        .collect();
    assert_eq!(experts, [false, true, true, false]);
}

#[test]
fn exclusions_beat_inclusions() {
    let model = llama(2);
    let spec = TargetSpec::parse(["q_proj", "v_proj"])
        .unwrap()
        .with_exclusions(["layers.0.self_attn.q_proj"])
        .unwrap();
    let resolution = spec.resolve(&model).unwrap();
    assert_eq!(
        paths(&resolution),
        [
            "model.layers.0.self_attn.v_proj",
            "model.layers.1.self_attn.q_proj",
            "model.layers.1.self_attn.v_proj",
        ]
    );
    assert_eq!(resolution.entries()[0].excluded, 1);
    assert_eq!(resolution.entries()[0].selected, 1);
}

#[test]
fn entry_whose_every_match_is_excluded_is_an_error() {
    let model = llama(2);
    let spec = TargetSpec::parse(["q_proj", "v_proj"])
        .unwrap()
        .with_exclusions(["self_attn.v_proj"])
        .unwrap();
    assert_eq!(
        errors(&spec, &model),
        [TargetError::AllExcluded {
            entry: "v_proj".to_owned(),
            excluded: 2,
            by: vec!["self_attn.v_proj".to_owned()],
        }]
    );
}

#[test]
fn typo_gets_its_suggestion() {
    #[derive(moduletree::ModuleTree)]
    struct Mlp {
        #[layer(kind = "linear")]
        linear_fc1: (),
        #[layer(kind = "linear")]
        linear_fc2: (),
    }
    #[derive(moduletree::ModuleTree)]
    struct Layer {
        mlp: Mlp,
    }
    let model = vec![Layer {
        mlp: Mlp {
            linear_fc1: (),
            linear_fc2: (),
        },
    }];
    let spec = TargetSpec::parse(["linear_fc1x"]).unwrap();
    let found = errors(&spec, &model);
    let [TargetError::NoMatch { entry, suggestions }] = found.as_slice() else {
        panic!("{found:?}");
    };
    assert_eq!(entry, "linear_fc1x");
    assert_eq!(suggestions[0], "linear_fc1");
    assert_eq!(
        found[0].to_string(),
        "target `linear_fc1x` matches no module; did you mean `linear_fc1` or `linear_fc2`?"
    );
}

#[test]
fn dotted_typo_suggests_a_suffix_of_the_same_length() {
    let model = llama(2);
    let spec = TargetSpec::parse(["mlp.down_prj"]).unwrap();
    let found = errors(&spec, &model);
    assert_eq!(
        found,
        [TargetError::NoMatch {
            entry: "mlp.down_prj".to_owned(),
            suggestions: vec!["mlp.down_proj".to_owned()],
        }]
    );
}

#[test]
fn container_entry_lists_the_layers_inside() {
    let model = llama(2);
    let found = errors(&TargetSpec::parse(["self_attn"]).unwrap(), &model);
    let [
        TargetError::NotALayer {
            entry,
            matched,
            layers_inside,
        },
    ] = found.as_slice()
    else {
        panic!("{found:?}");
    };
    assert_eq!(entry, "self_attn");
    assert_eq!(
        matched,
        &["model.layers.0.self_attn", "model.layers.1.self_attn"]
    );
    assert_eq!(layers_inside, &["q_proj", "k_proj", "v_proj", "o_proj"]);
    assert!(
        found[0]
            .to_string()
            .ends_with("; the layers inside are `q_proj`, `k_proj`, `v_proj`, `o_proj`"),
        "{}",
        found[0]
    );
    // A container (`Vec`) too; it holds more layers than are listed, and the message says so.
    let found = errors(&TargetSpec::parse(["^model.layers"]).unwrap(), &model);
    assert!(
        matches!(&found[0], TargetError::NotALayer { layers_inside, .. }
        if layers_inside.contains(&"<>.self_attn.q_proj".to_owned()) && layers_inside.len() == 9)
    );
    let text = found[0].to_string();
    assert!(
        text.contains("; the layers inside include `<>.self_attn.q_proj`"),
        "{text}"
    );
    assert!(text.ends_with(", …"), "{text}");
    assert_eq!(text.matches("`<>.").count(), 8, "{text}");
}

#[test]
fn every_bad_entry_is_reported_at_once_in_spec_order() {
    let model = llama(1);
    let spec = TargetSpec::parse(["mlp", "q_proj", "nothing_here"]).unwrap();
    let found = errors(&spec, &model);
    assert_eq!(found.len(), 2);
    assert!(matches!(&found[0], TargetError::NotALayer { entry, .. } if entry == "mlp"));
    assert!(matches!(&found[1], TargetError::NoMatch { entry, .. } if entry == "nothing_here"));
}

#[test]
fn shorthand_without_a_layer_of_its_family() {
    let model = llama(1);
    let found = errors(&TargetSpec::parse(["all-router"]).unwrap(), &model);
    assert_eq!(
        found,
        [TargetError::NoMatch {
            entry: "all-router".to_owned(),
            suggestions: vec![],
        }]
    );
}

#[test]
fn warnings_and_strict_mode() {
    let model = llama(2);
    // A regex that also hits containers selects the layers and warns.
    let spec = TargetSpec::parse([r"re:.*\.layers\.1\.self_attn(\.q_proj)?"]).unwrap();
    let resolution = spec.resolve(&model).unwrap();
    assert_eq!(paths(&resolution), ["model.layers.1.self_attn.q_proj"]);
    assert!(matches!(
        resolution.warnings(),
        [TargetWarning::NonLayerMatches { count: 1, .. }]
    ));
    let found = errors(&spec.clone().strict(true), &model);
    assert!(matches!(
        found.as_slice(),
        [TargetError::Strict(TargetWarning::NonLayerMatches { .. })]
    ));
    // An entry whose layers the filter removed warns; an empty selection is an error.
    let spec = TargetSpec::parse(["q_proj", "layers.1.self_attn.v_proj"])
        .unwrap()
        .with_layers([0]);
    let resolution = spec.resolve(&model).unwrap();
    assert_eq!(
        resolution.warnings(),
        [TargetWarning::LayerFiltered {
            entry: "layers.1.self_attn.v_proj".to_owned(),
            filtered: 1
        }]
    );
    let spec = TargetSpec::parse(["q_proj"]).unwrap().with_layers([7]);
    assert!(errors(&spec, &model).contains(&TargetError::FilteredOut {
        filter: "layers [7]".to_owned(),
        existing: vec![0, 1],
    }));
}

#[test]
fn rank_and_alpha_patterns_most_specific_wins() {
    let model = llama(2);
    let spec = TargetSpec::parse(["q_proj", "v_proj"])
        .unwrap()
        .with_rank(8)
        .with_alpha(16.0)
        .with_rank_pattern("q_proj", 2)
        .unwrap()
        .with_rank_pattern("layers.1.self_attn.q_proj", 6)
        .unwrap()
        .with_alpha_pattern("^model.layers.1.self_attn.q_proj", 5.0)
        .unwrap()
        .with_alpha_pattern("q_proj", 3.0)
        .unwrap();
    let resolution = spec.resolve(&model).unwrap();
    let got: Vec<(&str, u32, f64)> = resolution
        .layers()
        .iter()
        .map(|layer| (layer.path.as_str(), layer.rank, layer.alpha))
        .collect();
    assert_eq!(
        got,
        [
            ("model.layers.0.self_attn.q_proj", 2, 3.0),
            ("model.layers.0.self_attn.v_proj", 8, 16.0),
            ("model.layers.1.self_attn.q_proj", 6, 5.0),
            ("model.layers.1.self_attn.v_proj", 8, 16.0),
        ]
    );
    let unused = spec.with_rank_pattern("o_proj", 4).unwrap();
    let resolution = unused.resolve(&model).unwrap();
    assert!(
        resolution
            .warnings()
            .contains(&TargetWarning::UnusedRankPattern {
                pattern: "o_proj".to_owned()
            })
    );
}

#[test]
fn resolving_does_not_change_the_spec_and_is_repeatable() {
    let model = deepseek_v3(4, 1, 8, false);
    let spec = TargetSpec::parse(["all-linear", "re:.*\\.experts\\.1\\..*"])
        .unwrap()
        .with_exclusions(["shared_experts.*"])
        .unwrap()
        .with_layers([0, 2]);
    let before = spec.clone();
    let first = spec.resolve(&model).unwrap();
    let second = spec.resolve(&model).unwrap();
    assert_eq!(spec, before);
    assert_eq!(first, second);
    assert!(first.paths().all(|path| !path.contains("shared_experts")));
}

#[test]
fn deepseek_router_is_a_router_not_a_linear() {
    let model = deepseek_v3(3, 1, 4, false);
    let routers = resolve(&["all-router"], &model);
    assert_eq!(
        paths(&routers),
        ["model.layers.1.mlp.gate", "model.layers.2.mlp.gate"]
    );
    assert_eq!(routers.layers()[0].kind, Kind::Router);
    let linear = resolve(&["all-linear"], &model);
    assert!(linear.paths().all(|path| !path.ends_with("mlp.gate")));
}

#[test]
fn resolves_against_a_static_schema() {
    use moduletree::ModuleTree;
    let resolution = resolve(
        &["q_proj", "experts.<>.w1"],
        &moduletree_tests::models::Mixtral::SCHEMA,
    );
    assert_eq!(
        paths(&resolution),
        [
            "model.layers.<>.self_attn.q_proj",
            "model.layers.<>.block_sparse_moe.experts.<>.w1"
        ]
    );
    // An index literal can match a schema's `<>`.
    let resolution = resolve(
        &["layers.3.self_attn.q_proj"],
        &moduletree_tests::models::Mixtral::SCHEMA,
    );
    assert_eq!(resolution.layers().len(), 1);
}

#[test]
fn parse_errors_carry_offset_and_text() {
    let cases: [(&str, usize, PatternErrorKind); 9] = [
        ("", 0, PatternErrorKind::Empty),
        ("^", 1, PatternErrorKind::Empty),
        ("layers..q_proj", 7, PatternErrorKind::EmptySegment),
        ("q_proj.", 7, PatternErrorKind::EmptySegment),
        ("layers.^q", 7, PatternErrorKind::MisplacedAnchor),
        (
            "layers.<1>.q",
            7,
            PatternErrorKind::BadWildcard {
                segment: "<1>".to_owned(),
            },
        ),
        ("a.**.**.b", 5, PatternErrorKind::RepeatedRun),
        (
            "layers.01",
            7,
            PatternErrorKind::LeadingZero {
                segment: "01".to_owned(),
            },
        ),
        (
            "all-linaer",
            0,
            PatternErrorKind::UnknownShorthand {
                suggestion: Some("all-linear"),
            },
        ),
    ];
    for (text, offset, kind) in cases {
        let error = Pattern::parse(text).unwrap_err();
        assert_eq!(
            (error.text.as_str(), error.offset, error.kind),
            (text, offset, kind)
        );
    }
    let error = Pattern::parse("layers.99999999999999999999999").unwrap_err();
    assert!(matches!(error.kind, PatternErrorKind::IndexOverflow { .. }));
    let error = Pattern::parse("re:(unclosed").unwrap_err();
    assert_eq!(error.offset, 3);
    assert!(matches!(error.kind, PatternErrorKind::Regex { .. }));
    // A regex cannot close the group it is wrapped in.
    assert!(Pattern::parse("re:a)|(b").is_err());
    assert_eq!(
        Pattern::parse("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h.i.j.k.l.m")
            .unwrap_err()
            .kind,
        PatternErrorKind::TooManySegments
    );
}

#[test]
fn huge_and_deep_regexes_are_refused() {
    let long = format!("re:{}", "a".repeat(5000));
    assert!(matches!(
        Pattern::parse(&long).unwrap_err().kind,
        PatternErrorKind::RegexTooLong { len: 5000 }
    ));
    let deep = format!("re:{}a{}", "(".repeat(200), ")".repeat(200));
    assert!(matches!(
        Pattern::parse(&deep).unwrap_err().kind,
        PatternErrorKind::Regex { .. }
    ));
    let big = "re:(?:\\w{100}){100}".to_owned();
    assert!(matches!(
        Pattern::parse(&big).unwrap_err().kind,
        PatternErrorKind::Regex { .. }
    ));
}

#[test]
fn display_round_trips() {
    for text in [
        "q_proj",
        "^model.layers.<>.mlp.*.down_proj",
        "**.experts.3.w1",
        "all-linear",
        "all-router",
        "re:.*\\.layers\\.1\\..*",
    ] {
        let pattern = Pattern::parse(text).unwrap();
        assert_eq!(pattern.to_string(), text);
        assert_eq!(Pattern::parse(&pattern.to_string()).unwrap(), pattern);
    }
}

#[test]
fn layer_filter_reads_the_marked_container_not_the_first_index() {
    #[derive(moduletree::ModuleTree)]
    struct Block {
        #[layer(kind = "linear")]
        q_proj: (),
    }
    #[derive(moduletree::ModuleTree)]
    struct Stack {
        #[tree(layers)]
        layers: Vec<Block>,
    }
    #[derive(moduletree::ModuleTree)]
    struct Towers {
        towers: (Stack, Stack),
    }
    let stack = || Stack {
        layers: (0..3).map(|_| Block { q_proj: () }).collect(),
    };
    let model = Towers {
        towers: (stack(), stack()),
    };
    let spec = TargetSpec::parse(["q_proj"]).unwrap().with_layers([1]);
    assert_eq!(
        paths(&spec.resolve(&model).unwrap()),
        ["towers.0.layers.1.q_proj", "towers.1.layers.1.q_proj"]
    );
}

#[test]
fn map_keys_match_like_names() {
    use std::collections::BTreeMap;
    #[derive(moduletree::ModuleTree)]
    struct Heads {
        heads: BTreeMap<String, Linear>,
    }
    #[derive(moduletree::ModuleTree)]
    #[layer(kind = "linear")]
    struct Linear;
    let model = Heads {
        heads: [("cls", Linear), ("lm", Linear), ("10", Linear)]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    };
    assert_eq!(paths(&resolve(&["lm"], &model)), ["heads.lm"]);
    assert_eq!(
        paths(&resolve(&["heads.*"], &model)),
        ["heads.10", "heads.cls", "heads.lm"]
    );
    // A digit key is a key, not an index: `<>` does not match it, the literal does.
    assert_eq!(paths(&resolve(&["heads.10"], &model)), ["heads.10"]);
    assert!(
        TargetSpec::parse(["heads.<>"])
            .unwrap()
            .resolve(&model)
            .is_err()
    );
}

mod fixture_common;
mod schema_common;

/// The full static schema of every model type of this file, pinned.
#[test]
fn schemas_are_pinned() {
    let out = schema_common::schemas(&["targets"], &[]);
    fixture_common::assert_snapshot("schemas/targets.txt", &out);
}
