//! PEFT's own target-matching tables, run through moduletree's reading of a PEFT config.
//!
//! Ported from peft 0.21.2's `tests/test_tuners_utils.py` (`REGEX_TEST_CASES`, the targeted and
//! excluded module-name tests, `TestRankAndAlphaPattern`) and `tests/test_config.py` (the
//! `layers_to_transform` / `layers_pattern` checks), as captured with peft 0.21.2's own verdict
//! in `tests/fixtures/peft_tables/cases.json` (see the README and `make.py` beside it). Each test
//! computes moduletree's verdict for every case of one table and asserts that the cases where it
//! differs from PEFT's are exactly those listed in [`DEPARTURES`].

use std::collections::{BTreeMap, BTreeSet};

use moduletree::checkpoint::{Checkpoint, Dtype, TensorInfo};
use moduletree::target::TargetSpec;
use serde_json::{Map, Value, json};

const CASES: &str = include_str!("../fixtures/peft_tables/cases.json");

/// The cases where moduletree's verdict differs from peft 0.21.2's, as (case id, reason); an id is
/// the table and the case's index in it. A reason names the departure documented in
/// `moduletree::peft` / `moduletree::target::peft`, or starts with `UNEXPLAINED:` when none does.
const DEPARTURES: &[(&str, &str)] = &[
    // `target_modules`, one PEFT test per tree.
    ("target[5]", EVERY_ENTRY),
    ("target[28]", EVERY_ENTRY),
    ("target[17]", EVERY_ENTRY),
    ("target[18]", EVERY_ENTRY),
    ("target[34]", EVERY_ENTRY),
    ("target[161]", WHOLE_SEGMENTS),
    ("target[163]", WHOLE_SEGMENTS),
    ("target[166]", ROOT_LIST),
    ("target[167]", ROOT_LIST),
    ("target[174]", FILTER_EVERY_ENTRY),
    ("target[181]", ALL_LINEAR),
    // `rank_pattern` / `alpha_pattern`.
    ("pattern[177]", MOST_SPECIFIC),
    // `LoraConfig` checks.
    ("config[6]", NO_TARGET_MODULES),
];

const EVERY_ENTRY: &str = "every entry must match: another entry of the list matches nothing \
    in this test's modules, so the resolution fails (PEFT adapts what the others match)";
const WHOLE_SEGMENTS: &str = "names match on whole segments: a plain dotted `layers_pattern` \
    (`model.layers`, `lay.rs`) is matched segment by segment, not as PEFT's regex";
const ROOT_LIST: &str = "the layer filter finds a layer list at the root: without \
    `layers_pattern` the index is the first index segment (`layers.1.…` is layer 1), where PEFT \
    needs a dot before the list's name";
const FILTER_EVERY_ENTRY: &str = "the layer filter applies to every entry: a full-path entry \
    outside `layers_to_transform` is filtered out (PEFT accepts it before the filter)";
const MOST_SPECIFIC: &str = "the most specific rank/alpha key wins: \
    `layers.1.self_attn.q_proj` over the first-inserted `q_proj`";
const ALL_LINEAR: &str = "not a departure from PEFT's meaning (target/peft.rs docs): \
    `all-linear` is the shorthand, which PEFT expands before matching; the probe hands the raw \
    string to check_target_module_exists, where it is a regex matching nothing";
const NO_TARGET_MODULES: &str = "a config names its targets: one without `target_modules` is \
    refused (MissingField), where PEFT's LoraConfig falls back on the model type's default \
    targets, a table this crate does not carry";

/// One table of `cases.json`.
fn table(name: &str) -> Vec<Value> {
    let all: Value = serde_json::from_str(CASES).expect("cases.json is JSON");
    assert_eq!(all["peft_version"], "0.21.2");
    all[name].as_array().expect("a table is a list").clone()
}

/// A walkable tree holding one linear layer (a 2-D `weight`) at each key, digit segments read as
/// indices as PEFT reads them (a checkpoint keeps `001` a name).
fn tree(keys: &[&str]) -> Checkpoint {
    let tensors = keys
        .iter()
        .map(|key| TensorInfo {
            name: format!("{}.weight", as_indexed(key)),
            dtype: Dtype::F32,
            shape: vec![4, 4],
            data_offsets: (0, 64),
        })
        .collect();
    Checkpoint::from_tensors(Vec::new(), tensors)
}

/// Asserts that the disagreeing case ids of a table are exactly its listed departures.
fn assert_departures(prefix: &str, cases: usize, disagreements: &BTreeMap<String, String>) {
    let listed: BTreeSet<&str> = DEPARTURES
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| id.starts_with(prefix))
        .collect();
    let found: BTreeSet<&str> = disagreements.keys().map(String::as_str).collect();
    let unlisted: Vec<String> = found
        .difference(&listed)
        .map(|id| format!("{id}: {}", disagreements[*id]))
        .collect();
    let agreeing: Vec<&&str> = listed.difference(&found).collect();
    assert!(
        unlisted.is_empty() && agreeing.is_empty(),
        "{prefix}: {cases} cases, {} disagreements\nnot in DEPARTURES:\n{}\nin DEPARTURES but agreeing: {agreeing:?}",
        found.len(),
        unlisted.join("\n"),
    );
}

/// A key as the tree names it: digit segments are indices (`bar.001.baz` is `bar.1.baz`).
fn as_indexed(key: &str) -> String {
    key.split('.')
        .map(|segment| match segment.parse::<usize>() {
            Ok(index) if segment.bytes().all(|byte| byte.is_ascii_digit()) => index.to_string(),
            _ => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

const TARGET_FIELDS: [&str; 5] = [
    "target_modules",
    "layers_to_transform",
    "layers_pattern",
    "exclude_modules",
    "modules_to_save",
];

/// `target_module_cases`: the cases of one PEFT test (same source and config) are resolved
/// together against a tree of all their keys; a case is matched when its key is selected. A
/// config moduletree refuses, or a resolution that fails, selects nothing.
#[test]
fn target_module_cases() {
    let cases = table("target_module_cases");
    let mut groups: BTreeMap<String, (Value, Vec<usize>)> = BTreeMap::new();
    for (index, case) in cases.iter().enumerate() {
        let config: Map<String, Value> = TARGET_FIELDS
            .iter()
            .filter(|field| !case[**field].is_null())
            .map(|field| ((*field).to_owned(), case[*field].clone()))
            .collect();
        let config = Value::Object(config);
        let group = format!("{} {config}", case["source"]);
        groups
            .entry(group)
            .or_insert((config, Vec::new()))
            .1
            .push(index);
    }
    let mut disagreements = BTreeMap::new();
    for (config, members) in groups.values() {
        let keys: Vec<&str> = members
            .iter()
            .map(|&index| cases[index]["key"].as_str().expect("a key is a string"))
            .collect();
        let outcome = TargetSpec::from_peft_value(config)
            .map_err(|error| error.to_string())
            .and_then(|spec| {
                spec.resolve(&tree(&keys))
                    .map_err(|error| error.to_string())
            });
        for (&index, key) in members.iter().zip(&keys) {
            let ours = outcome
                .as_ref()
                .is_ok_and(|resolution| resolution.paths().any(|path| path == as_indexed(key)));
            let peft = cases[index]["expected"].as_bool().expect("a verdict");
            if ours != peft {
                let why = outcome.as_ref().err().map_or("", String::as_str);
                disagreements.insert(
                    format!("target[{index}]"),
                    format!("{key:?} {config}: peft {peft}, ours {ours} {why}"),
                );
            }
        }
    }
    assert_departures("target[", cases.len(), &disagreements);
}

/// `pattern_cases`: the rank or alpha moduletree gives the module, against the value of the key
/// PEFT chose (or the default).
#[test]
fn pattern_cases() {
    let cases = table("pattern_cases");
    let mut disagreements = BTreeMap::new();
    for (index, case) in cases.iter().enumerate() {
        let kind = case["kind"].as_str().expect("a kind");
        // serde_json's map sorts its keys: PEFT's insertion order is not passed on, and
        // moduletree consults the order only among equally specific keys.
        let patterns: Map<String, Value> = case["patterns"]
            .as_array()
            .expect("patterns are a list")
            .iter()
            .map(|pair| (pair[0].as_str().expect("a key").to_owned(), pair[1].clone()))
            .collect();
        let config = json!({
            "target_modules": ".*",
            "r": case["default"],
            "lora_alpha": case["default"],
            kind: patterns,
        });
        let module = case["module"].as_str().expect("a module");
        let spec = TargetSpec::from_peft_value(&config).expect("the config reads");
        let (rank, alpha) = spec.rank_and_alpha_for(module);
        let ours = if kind == "rank_pattern" {
            f64::from(rank)
        } else {
            alpha
        };
        let peft = case["expected_value"].as_f64().expect("a value");
        if ours.to_bits() != peft.to_bits() {
            disagreements.insert(
                format!("pattern[{index}]"),
                format!(
                    "{module:?} {kind} {}: peft {peft} (key {}), ours {ours}",
                    case["patterns"], case["expected_key"]
                ),
            );
        }
    }
    assert_departures("pattern[", cases.len(), &disagreements);
}

/// `config_cases`: whether moduletree refuses the config where `LoraConfig` raises.
#[test]
fn config_cases() {
    let cases = table("config_cases");
    let mut disagreements = BTreeMap::new();
    for (index, case) in cases.iter().enumerate() {
        let ours = TargetSpec::from_peft_value(&case["kwargs"]).err();
        let peft = case["error"].as_str();
        if ours.is_some() != peft.is_some() {
            disagreements.insert(
                format!("config[{index}]"),
                format!("{}: peft {peft:?}, ours {ours:?}", case["kwargs"]),
            );
        }
    }
    assert_departures("config[", cases.len(), &disagreements);
}
