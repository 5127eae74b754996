//! The suggestions for a target that matched nothing: only valid targets, ranked by whole
//! segments and words before edit distance, the same at run time and in `targets!`.

use moduletree::ModuleTree;
use moduletree::target::checked::target_message;
use moduletree::target::{TargetError, TargetSpec};
use moduletree_tests::models::{Llama, Mixtral, llama, mixtral};

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
struct Block {
    #[layer(kind = "router")]
    gate: (),
    out_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

#[derive(ModuleTree)]
struct Model {
    #[tree(layers)]
    layers: Vec<Block>,
    projections: Vec<Linear>,
}

fn model() -> Model {
    let block = || Block {
        gate: (),
        out_proj: Linear,
        up_proj: Linear,
        down_proj: Linear,
    };
    Model {
        layers: vec![block(), block()],
        projections: vec![Linear, Linear],
    }
}

/// The run-time suggestions for `entry`, which must match nothing.
fn run_time<T: moduletree::Walk + ?Sized>(model: &T, entry: &str) -> Vec<String> {
    let error = TargetSpec::parse([entry])
        .unwrap()
        .resolve(model)
        .unwrap_err();
    match &error.errors[..] {
        [TargetError::NoMatch { suggestions, .. }] => suggestions.clone(),
        other => panic!("expected one no-match error for `{entry}`, got {other:?}"),
    }
}

/// The suggestions `targets!` would print for `entry`, read back from its message.
fn compile_time(schema: &moduletree::Schema, entry: &str) -> Vec<String> {
    let message = target_message(schema, entry, "T").expect("the entry matches nothing");
    let text = message.as_str();
    let Some((_, list)) = text.split_once("; did you mean ") else {
        return Vec::new();
    };
    list.trim_end_matches('?')
        .split(['`'])
        .filter(|piece| !piece.is_empty() && *piece != ", " && *piece != " or ")
        .map(str::to_owned)
        .collect()
}

#[test]
fn siblings_sharing_a_word_are_all_suggested() {
    // Edit distance alone gives only `out_proj`; `up_proj` and `down_proj` share `proj`.
    assert_eq!(
        run_time(&model(), "gate_proj"),
        ["out_proj", "up_proj", "down_proj"]
    );
}

#[test]
fn the_layer_name_ranks_before_its_module() {
    let found = run_time(&llama(2), "mlp.q_proj");
    assert_eq!(found[0], "self_attn.q_proj");
    assert_eq!(run_time(&llama(2), "mlp.gate_prj"), ["mlp.gate_proj"]);
}

/// A parameter's name (`q_proj.weight`, as a checkpoint or `target_parameters` writes it) gets
/// the layer that owns it; `re:` with no pattern is refused at parse time.
#[test]
fn a_parameter_name_suggests_its_layer() {
    let model = llama(4);
    assert_eq!(run_time(&model, "q_proj.weight"), ["q_proj"]);
    assert_eq!(run_time(&model, "mlp.down_proj.bias"), ["mlp.down_proj"]);
    assert_eq!(
        run_time(&model, "layers.3.self_attn.o_proj.weight"),
        ["layers.<>.self_attn.o_proj"]
    );
    let error = TargetSpec::parse(["re:"]).unwrap_err().to_string();
    assert!(error.contains("the pattern is empty"), "{error}");
}

#[test]
fn suggestions_are_never_indices_or_containers() {
    // `projections.0` is a layer at an index: its tail names the list with the index.
    assert_eq!(run_time(&model(), "projection"), ["projections.<>"]);
    // `layers.<>.mlp` is a module: never suggested, only the layers inside it.
    for suggestion in run_time(&llama(2), "layers.<>.mlpp") {
        assert!(!suggestion.ends_with("mlp"), "{suggestion}");
    }
    let nearest = run_time(&mixtral(2, 4), "experts.<>.w4");
    assert!(
        nearest.iter().all(|s| s.starts_with("experts.<>.w")),
        "{nearest:?}"
    );
}

#[test]
fn run_time_and_compile_time_agree() {
    let cases: &[(&str, &moduletree::Schema)] = &[
        ("q_prj", &Llama::SCHEMA),
        ("mlp.gate_prj", &Llama::SCHEMA),
        ("mlp.q_proj", &Llama::SCHEMA),
        ("layers.<>.self_attn.o_prj", &Llama::SCHEMA),
        ("experts.<>.w4", &Mixtral::SCHEMA),
        ("gate_proj", &Model::SCHEMA),
        ("projection", &Model::SCHEMA),
        ("zzzzzz", &Llama::SCHEMA),
    ];
    for (entry, schema) in cases {
        assert_eq!(
            compile_time(schema, entry),
            run_time(*schema, entry),
            "`{entry}`"
        );
    }
}

#[test]
fn compile_time_message_names_the_entry_and_the_type() {
    let message = target_message(&Llama::SCHEMA, "q_prj", "Llama").unwrap();
    assert_eq!(
        message.as_str(),
        "target `q_prj` matches no layer of `Llama`; did you mean `q_proj`, `k_proj` or `v_proj`?"
    );
    assert!(target_message(&Llama::SCHEMA, "q_proj", "Llama").is_none());
    let container = target_message(&Llama::SCHEMA, "self_attn", "Llama").unwrap();
    assert_eq!(
        container.as_str(),
        "target `self_attn` matches only modules or containers of `Llama`, not layers"
    );
}

#[test]
fn shorthand_typos_get_the_nearest_shorthand() {
    let error = TargetSpec::parse(["all-lineer"]).unwrap_err();
    assert!(
        error.to_string().contains("did you mean `all-linear`?"),
        "{error}"
    );
}

#[test]
fn compile_time_parse_errors_use_the_run_time_words() {
    use moduletree::target::Pattern;
    use moduletree::target::schema_match::malformed_reason;
    let deep = vec!["a"; 65].join(".");
    for entry in [
        "layers..q_proj",
        "a.^b",
        "**.**",
        "all-lineer",
        "^",
        deep.as_str(),
    ] {
        let run_time = Pattern::parse(entry).unwrap_err().kind.to_string();
        let compile_time = malformed_reason(entry).expect("the entry is malformed");
        // The run-time words may go on with a suggestion, which the message adds apart.
        assert!(
            run_time.starts_with(compile_time),
            "`{entry}`: {run_time} / {compile_time}"
        );
    }
    let message = target_message(&Llama::SCHEMA, "all-lineer", "Llama").unwrap();
    assert!(
        message.as_str().ends_with("; did you mean `all-linear`?"),
        "{}",
        message.as_str()
    );
    let message = target_message(&Llama::SCHEMA, "layers..q_proj", "Llama").unwrap();
    assert_eq!(
        message.as_str(),
        "target `layers..q_proj` is not a valid pattern (checking `Llama`): empty segment: expected a name, an index, `<>`, `*` or `**` between dots"
    );
}

mod fixture_common;
mod schema_common;

/// The full static schema of every model type of this file, pinned.
#[test]
fn schemas_are_pinned() {
    let out = schema_common::schemas(&["suggestions"], &[]);
    fixture_common::assert_snapshot("schemas/suggestions.txt", &out);
}
