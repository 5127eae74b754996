//! Reading PEFT's `adapter_config.json` (every kind of bad input gets a typed error naming the
//! field), and writing a resolution back (sorted, compact when equivalent, byte-identical).

use moduletree::target::{
    LayerIndexSource, PatternErrorKind, PeftConfigError, Resolution, TargetError, TargetSpec,
};
use moduletree_tests::models::{deepseek_v3, llama, mixtral};

fn read(json: &str) -> Result<TargetSpec, PeftConfigError> {
    TargetSpec::from_peft_config(json)
}

#[test]
fn reads_every_target_field() {
    let spec = read(
        r#"{
            "target_modules": ["q_proj", "mlp.down_proj"],
            "exclude_modules": ".*\\.layers\\.0\\..*",
            "layers_to_transform": [3, 1, 1],
            "layers_pattern": "layers",
            "r": 16,
            "lora_alpha": 32,
            "rank_pattern": {"q_proj": 4},
            "alpha_pattern": {"down_proj": 8.5},
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM"
        }"#,
    )
    .unwrap();
    let entries: Vec<String> = spec.entries().iter().map(ToString::to_string).collect();
    assert_eq!(entries, ["q_proj", "mlp.down_proj"]);
    assert_eq!(spec.exclusions()[0].to_string(), r"re:.*\.layers\.0\..*");
    let filter = spec.layer_filter().unwrap();
    assert_eq!(filter.indices(), [1, 3]);
    assert_eq!(
        filter.source(),
        &LayerIndexSource::After(vec!["layers".to_owned()])
    );
    assert_eq!((spec.rank(), spec.alpha()), (16, 32.0));
    let resolution = spec.resolve(&llama(4)).unwrap();
    let got: Vec<(&str, u32, f64)> = resolution
        .layers()
        .iter()
        .map(|layer| (layer.path.as_str(), layer.rank, layer.alpha))
        .collect();
    assert_eq!(
        got,
        [
            ("model.layers.1.self_attn.q_proj", 4, 32.0),
            ("model.layers.1.mlp.down_proj", 16, 8.5),
            ("model.layers.3.self_attn.q_proj", 4, 32.0),
            ("model.layers.3.mlp.down_proj", 16, 8.5),
        ]
    );
    // A single integer is one layer; `all-linear` is the shorthand.
    let spec = read(r#"{"target_modules": "all-linear", "layers_to_transform": 2}"#);
    assert!(matches!(
        spec,
        Err(PeftConfigError::Conflict {
            field: "layers_to_transform",
            ..
        })
    ));
    let spec = read(r#"{"target_modules": ["q_proj"], "layers_to_transform": 2}"#).unwrap();
    assert_eq!(spec.layer_filter().unwrap().indices(), [2]);
}

#[test]
fn bad_input_gets_a_typed_error_naming_the_field() {
    let cases: &[(&str, &str)] = &[
        ("{", "adapter config is not valid JSON at line 1, column 1"),
        (
            "[1, 2]",
            "adapter config must be a JSON object, found a list",
        ),
        ("{}", "adapter config has no `target_modules`"),
        (
            r#"{"target_modules": null}"#,
            "adapter config has no `target_modules`",
        ),
        (
            r#"{"target_modules": []}"#,
            "`target_modules` is an empty list",
        ),
        (
            r#"{"target_modules": 3}"#,
            "`target_modules` must be a list of strings or a string, found the number 3",
        ),
        (
            r#"{"target_modules": ["q_proj", 7]}"#,
            "`target_modules[1]` must be a string, found the number 7",
        ),
        (
            r#"{"target_modules": ["q_proj", ""]}"#,
            "`target_modules[1]`: invalid target pattern `` at offset 0: the pattern is empty",
        ),
        (
            r#"{"target_modules": ["^lm_head"]}"#,
            "`target_modules[0]`: invalid target pattern `^lm_head` at offset 0: segment `^lm_head` is not a module name (PEFT names are literal)",
        ),
        (
            r#"{"target_modules": ["layers.*.q_proj"]}"#,
            "`target_modules[0]`: invalid target pattern `layers.*.q_proj` at offset 7: segment `*` is not a module name (PEFT names are literal)",
        ),
        (
            r#"{"target_modules": "(unclosed"}"#,
            "`target_modules`: invalid target pattern `(unclosed` at offset 0: invalid regex",
        ),
        (
            r#"{"target_modules": "all-linaer"}"#,
            "`target_modules`: invalid target pattern `all-linaer` at offset 0: unknown shorthand",
        ),
        (
            r#"{"target_modules": ["q"], "exclude_modules": {"a": 1}}"#,
            "`exclude_modules` must be a list of strings or a string, found an object",
        ),
        (
            r#"{"target_modules": ["q"], "layers_to_transform": [-1]}"#,
            "`layers_to_transform[0]` must be a non-negative integer, found the number -1",
        ),
        (
            r#"{"target_modules": ["q"], "layers_to_transform": "1"}"#,
            "`layers_to_transform` must be an integer or a list of integers, found a string",
        ),
        (
            r#"{"target_modules": ["q"], "layers_pattern": "layers"}"#,
            "`layers_pattern` needs `layers_to_transform`",
        ),
        (
            r#"{"target_modules": ["q"], "layers_to_transform": [1], "layers_pattern": "(a"}"#,
            "`layers_pattern`: invalid target pattern `(a` at offset 0: invalid regex",
        ),
        (
            r#"{"target_modules": ["q"], "layers_to_transform": [1], "layers_pattern": [1]}"#,
            "`layers_pattern[0]` must be a module name or a regex, found the number 1",
        ),
        (
            r#"{"target_modules": ["q"], "r": 0}"#,
            "`r` must be a positive integer, found the number 0",
        ),
        (
            r#"{"target_modules": ["q"], "r": 4.5}"#,
            "`r` must be a positive integer, found the number 4.5",
        ),
        (
            r#"{"target_modules": ["q"], "lora_alpha": "16"}"#,
            "`lora_alpha` must be a number, found a string",
        ),
        (
            r#"{"target_modules": ["q"], "rank_pattern": ["q"]}"#,
            "`rank_pattern` must be an object of ranks, found a list",
        ),
        (
            r#"{"target_modules": ["q"], "rank_pattern": {"q": -2}}"#,
            "`rank_pattern[\"q\"]` must be a positive integer, found the number -2",
        ),
        (
            r#"{"target_modules": ["q"], "alpha_pattern": {"q": null}}"#,
            "`alpha_pattern[\"q\"]` must be a number, found null",
        ),
        (
            r#"{"target_modules": ["q"], "rank_pattern": {"(": 2}}"#,
            "`rank_pattern[\"(\"]`: invalid target pattern `(?:.*\\.)?(?:()` at offset 0: invalid regex",
        ),
    ];
    for (json, expected) in cases {
        let error = read(json).unwrap_err().to_string();
        assert!(
            error.starts_with(expected),
            "{json}\n  got: {error}\n want: {expected}"
        );
    }
}

#[test]
fn huge_or_deeply_nested_regexes_are_refused() {
    let huge = format!(r#"{{"target_modules": "{}"}}"#, "a|".repeat(3000));
    assert!(matches!(
        read(&huge),
        Err(PeftConfigError::Pattern { ref field, ref source })
            if field == "target_modules"
                && matches!(source.kind, PatternErrorKind::RegexTooLong { len: 6000 })
    ));
    let deep = format!(
        r#"{{"target_modules": "{}q{}"}}"#,
        "(".repeat(100),
        ")".repeat(100)
    );
    assert!(matches!(
        read(&deep),
        Err(PeftConfigError::Pattern { ref source, .. })
            if matches!(source.kind, PatternErrorKind::Regex { .. })
    ));
    let large = r#"{"target_modules": "(?:\\w{200}){200}"}"#;
    assert!(matches!(read(large), Err(PeftConfigError::Pattern { .. })));
}

fn resolution() -> Resolution {
    TargetSpec::parse(["q_proj", "experts.<>.w1"])
        .unwrap()
        .with_layers([1])
        .with_rank(8)
        .with_alpha(16.0)
        .with_rank_pattern("experts.1.w1", 2)
        .unwrap()
        .with_alpha_pattern("q_proj", 4.0)
        .unwrap()
        .resolve(&mixtral(2, 2))
        .unwrap()
}

#[test]
fn writes_sorted_full_paths_and_patterns() {
    let json = resolution().to_peft().to_json();
    let expected = r#"{
  "target_modules": [
    "model.layers.1.block_sparse_moe.experts.0.w1",
    "model.layers.1.block_sparse_moe.experts.1.w1",
    "model.layers.1.self_attn.q_proj"
  ],
  "r": 8,
  "lora_alpha": 16.0,
  "rank_pattern": {
    "model.layers.1.block_sparse_moe.experts.1.w1": 2
  },
  "alpha_pattern": {
    "model.layers.1.self_attn.q_proj": 4.0
  }
}"#;
    assert_eq!(json, expected);
    assert_eq!(resolution().to_peft().to_json(), json);
}

#[test]
fn writes_compact_suffixes_when_equivalent() {
    let model = mixtral(2, 2);
    let all = TargetSpec::parse(["q_proj", "w1"])
        .unwrap()
        .resolve(&model)
        .unwrap();
    assert_eq!(all.to_peft_compact(&model).target_modules, ["q_proj", "w1"]);
    // Layer 1 only: the suffixes must name the layer.
    let compact = resolution().to_peft_compact(&model);
    assert_eq!(
        compact.target_modules,
        [
            "layers.1.block_sparse_moe.experts.0.w1",
            "layers.1.block_sparse_moe.experts.1.w1",
            "layers.1.self_attn.q_proj"
        ]
    );
    // On DeepSeek-V3 (layer 0 dense, layer 1 with two routed experts and a shared expert),
    // `up_proj` without the shared expert: the bare name would also hit the shared expert, and a
    // suffix never starts with an index.
    let model = deepseek_v3(2, 1, 2, false);
    let spec = TargetSpec::parse(["up_proj"])
        .unwrap()
        .with_exclusions(["shared_experts.up_proj"])
        .unwrap();
    let compact = spec.resolve(&model).unwrap().to_peft_compact(&model);
    assert_eq!(
        compact.target_modules,
        ["experts.0.up_proj", "experts.1.up_proj", "mlp.up_proj"]
    );
}

#[test]
fn written_config_reads_back_to_the_same_selection() {
    let model = mixtral(2, 2);
    let original = resolution();
    for targets in [original.to_peft(), original.to_peft_compact(&model)] {
        let spec = read(&targets.to_json()).unwrap();
        let again = spec.resolve(&model).unwrap();
        assert_eq!(again.layers(), original.layers());
    }
}

#[test]
fn a_zero_rank_or_an_alpha_that_is_not_finite_does_not_resolve() {
    let model = llama(2);
    let spec = || TargetSpec::parse(["q_proj"]).unwrap();
    for (spec, what) in [
        (spec().with_rank(0), "rank 0"),
        (spec().with_alpha(f64::NAN), "alpha NaN"),
        (spec().with_alpha(f64::INFINITY), "alpha inf"),
        (
            spec().with_rank_pattern("q_proj", 0).unwrap(),
            "rank pattern `q_proj` = 0",
        ),
    ] {
        let error = spec.resolve(&model).unwrap_err();
        assert_eq!(
            error.errors,
            [TargetError::InvalidSettings {
                what: what.to_owned()
            }]
        );
        assert!(error.to_string().starts_with(what), "{error}");
    }
    // Zero and negative alphas are PEFT's to allow.
    assert!(spec().with_alpha(-4.0).resolve(&model).is_ok());
}

#[test]
fn a_layers_pattern_regex_keeps_the_limits_of_every_target_regex() {
    let long = "(?:a|b)".repeat(700);
    let json = serde_json::json!({
        "target_modules": ["q"],
        "layers_to_transform": [1],
        "layers_pattern": long,
    });
    let error = read(&json.to_string()).unwrap_err().to_string();
    assert!(
        error.starts_with("`layers_pattern`") && error.contains("longer than the limit of 4096"),
        "{error}"
    );
    // A regex pattern reads the index at the end of a path as PEFT does (it matches the path
    // plus a dot), and inside it.
    let spec = read(
        r#"{"target_modules": ["q_proj"], "layers_to_transform": [1], "layers_pattern": "lay(er)s"}"#,
    )
    .unwrap();
    let paths: Vec<String> = spec
        .resolve(&llama(3))
        .unwrap()
        .paths()
        .map(str::to_owned)
        .collect();
    assert_eq!(paths, ["model.layers.1.self_attn.q_proj"]);
}

/// `target_parameters` names parameters, as PEFT matches them: a bare name is a parameter adapted
/// whole (an expert bank), never a module of that name (the dense MLP's or the shared expert's
/// `down_proj`, whose parameter is `down_proj.weight`); `gate.weight` is the router's weight.
#[test]
fn target_parameters_select_banks_and_named_weights_only() {
    let model = deepseek_v3(3, 1, 4, true);
    let spec = read(
        r#"{
            "target_modules": ["o_proj"],
            "target_parameters": ["down_proj", "gate_up_proj", "gate.weight"],
            "r": 4,
            "lora_alpha": 8
        }"#,
    )
    .unwrap();
    let resolution = spec.resolve(&model).unwrap();
    let mut selected: Vec<&str> = resolution
        .layers()
        .iter()
        .map(|layer| layer.path.as_str())
        .filter(|path| !path.ends_with("o_proj"))
        .collect();
    selected.sort_unstable();
    assert_eq!(
        selected,
        [
            "model.layers.1.mlp.experts.down_proj",
            "model.layers.1.mlp.experts.gate_up_proj",
            "model.layers.1.mlp.gate",
            "model.layers.2.mlp.experts.down_proj",
            "model.layers.2.mlp.experts.gate_up_proj",
            "model.layers.2.mlp.gate",
        ]
    );

    // PEFT 0.21 writes `target_modules: []` beside `target_parameters` ("parameters only").
    let only = read(
        r#"{"target_modules": [], "target_parameters": ["down_proj"], "r": 4, "lora_alpha": 8}"#,
    )
    .unwrap();
    assert_eq!(only.resolve(&model).unwrap().layers().len(), 2);

    // A layer filter keeps the dense and shared `down_proj` of layer 2 only, and every bank:
    // the parameter entry selects the banks whatever the filter says, even where the module
    // entry matches them too.
    let both = read(
        r#"{"target_modules": ["down_proj"], "target_parameters": ["down_proj"],
            "layers_to_transform": [2], "r": 4, "lora_alpha": 8}"#,
    )
    .unwrap();
    let mut selected: Vec<String> = both
        .resolve(&model)
        .unwrap()
        .layers()
        .iter()
        .map(|layer| layer.path.clone())
        .collect();
    selected.sort_unstable();
    assert_eq!(
        selected,
        [
            "model.layers.1.mlp.experts.down_proj",
            "model.layers.2.mlp.experts.down_proj",
            "model.layers.2.mlp.shared_experts.down_proj",
        ]
    );

    // The same name in `target_modules` is a module suffix, and selects every `down_proj`.
    let modules = read(r#"{"target_modules": ["down_proj"], "r": 4, "lora_alpha": 8}"#).unwrap();
    let selected = modules.resolve(&model).unwrap();
    assert!(
        selected
            .layers()
            .iter()
            .any(|layer| layer.path == "model.layers.0.mlp.down_proj")
    );
    assert!(
        selected
            .layers()
            .iter()
            .any(|layer| layer.path == "model.layers.1.mlp.shared_experts.down_proj")
    );

    // A bank name that no bank has matches nothing, whatever modules share it; the error
    // suggests the linear's weight, which is how PEFT names it.
    let dense = read(r#"{"target_parameters": ["down_proj"], "r": 4, "lora_alpha": 8}"#).unwrap();
    let error = dense
        .resolve(&deepseek_v3(2, 2, 4, true))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("target `down_proj` matches no module; did you mean `down_proj.weight`?"),
        "{error}"
    );
}
