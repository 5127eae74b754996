//! Property tests: the pattern parser and the PEFT reader take any input without panicking, a
//! parsed pattern round-trips through `Display`, and a resolution written in PEFT's form and
//! read back selects the same layers with the same ranks and alphas.

use moduletree::target::{Pattern, TargetSpec};
use moduletree_tests::models::{deepseek_v3, mixtral, qwen2_moe};
use proptest::prelude::*;

/// Pattern-like text: the grammar's pieces in any order, including broken ones.
fn pattern_text() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "q_proj", "layers", "experts", ".", ".", "..", "<>", "<", ">", "*", "**", "^", "re:",
        "all-", "linear", "router", "0", "1", "10", "01", "(", ")", "\\.", "|", "+", "é", " ", "-",
    ]);
    prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

fn round_trips(text: &str) -> Result<(), TestCaseError> {
    if let Ok(pattern) = Pattern::parse(text) {
        let shown = pattern.to_string();
        let again = Pattern::parse(&shown);
        prop_assert_eq!(again.as_ref(), Ok(&pattern), "{} -> {}", text, shown);
        prop_assert_eq!(again.unwrap().to_string(), shown);
    }
    Ok(())
}

proptest! {
    #[test]
    fn parser_never_panics_and_round_trips_on_any_string(text in any::<String>()) {
        round_trips(&text)?;
    }

    #[test]
    fn parser_never_panics_and_round_trips_on_pattern_like_text(text in pattern_text()) {
        round_trips(&text)?;
        if let Err(error) = Pattern::parse(&text) {
            prop_assert!(error.offset <= text.len());
            prop_assert_eq!(error.text, text);
        }
    }

    #[test]
    fn peft_reader_never_panics(text in any::<String>(), targets in pattern_text()) {
        let _ = TargetSpec::from_peft_config(&text);
        let json = serde_json::json!({ "target_modules": [targets.clone()], "exclude_modules": targets.clone() });
        let _ = TargetSpec::from_peft_value(&json);
        let json = serde_json::json!({ "target_modules": targets, "rank_pattern": { "x(": 1 } });
        let _ = TargetSpec::from_peft_value(&json);
    }
}

/// The models of the export property, each with entries that exist in it.
const MODELS: [&[&str]; 3] = [
    &[
        "q_proj",
        "o_proj",
        "experts.<>.w1",
        "experts.*.w2",
        "**.w3",
        "block_sparse_moe.gate",
    ],
    &[
        "q_proj",
        "experts.<>.up_proj",
        "shared_expert.down_proj",
        "mlp.gate",
        "gate_proj",
    ],
    &[
        "kv_b_proj",
        "experts.*.up_proj",
        "shared_experts.down_proj",
        "q_a_proj",
        "mlp.gate",
    ],
];

/// A random spec over the names of one MoE test model.
fn spec(entries: &'static [&'static str]) -> impl Strategy<Value = TargetSpec> {
    let entry = prop::sample::select(
        [
            entries,
            &[
                "all-linear",
                "all-router",
                "^lm_head",
                "layers.1.self_attn.k_proj",
                "re:.*\\.experts\\.1\\..*",
            ],
        ]
        .concat(),
    );
    let exclusion = prop::sample::select(vec![
        "layers.0.self_attn.q_proj",
        "experts.0.*",
        "re:.*\\.layers\\.2\\..*",
    ]);
    let rank = prop::sample::select(vec!["q_proj", "experts.<>.*", "layers.1.**", "up_proj"]);
    (
        prop::collection::vec(entry, 1..4),
        prop::collection::vec(exclusion, 0..2),
        prop::option::of(prop::collection::vec(1usize..3, 1..3)),
        prop::collection::vec((rank.clone(), 1u32..64), 0..3),
        prop::collection::vec((rank, 1u32..64), 0..2),
        1u32..32,
    )
        .prop_map(|(entries, exclusions, layers, ranks, alphas, r)| {
            let mut spec = TargetSpec::parse(entries)
                .unwrap()
                .with_exclusions(exclusions)
                .unwrap()
                .with_rank(r)
                .with_alpha(f64::from(2 * r));
            if let Some(layers) = layers {
                spec = spec.with_layers(layers);
            }
            for (pattern, rank) in ranks {
                spec = spec.with_rank_pattern(pattern, rank).unwrap();
            }
            for (pattern, alpha) in alphas {
                spec = spec
                    .with_alpha_pattern(pattern, f64::from(alpha) / 2.0)
                    .unwrap();
            }
            spec
        })
}

fn model_and_spec() -> impl Strategy<Value = (usize, TargetSpec)> {
    (0..MODELS.len()).prop_flat_map(|which| (Just(which), spec(MODELS[which])))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn exported_spec_reads_back_to_the_same_layers((which, spec) in model_and_spec()) {
        let outcome = match which {
            0 => check(&spec, &mixtral(3, 3)),
            1 => check(&spec, &qwen2_moe(3, 2, &[0])),
            _ => check(&spec, &deepseek_v3(3, 1, 3, false)),
        };
        if let Some(problem) = outcome {
            return Err(TestCaseError::fail(problem));
        }
    }
}

/// Resolves, writes (full and compact), reads back and resolves again; describes a difference.
fn check<T: moduletree::Walk>(spec: &TargetSpec, model: &T) -> Option<String> {
    let Ok(original) = spec.resolve(model) else {
        return None;
    };
    for targets in [original.to_peft(), original.to_peft_compact(model)] {
        let json = targets.to_json();
        let read = match TargetSpec::from_peft_config(&json) {
            Ok(read) => read,
            Err(error) => return Some(format!("{json}: {error}")),
        };
        match read.resolve(model) {
            Ok(again) if again.layers() == original.layers() => {}
            Ok(again) => {
                return Some(format!(
                    "{spec}\n{json}\nfirst {:?}\nthen {:?}",
                    original.layers(),
                    again.layers()
                ));
            }
            Err(error) => return Some(format!("{json}: {error}")),
        }
    }
    None
}
