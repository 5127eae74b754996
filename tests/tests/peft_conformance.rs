//! One adapter file, one verdict: a table of adapter directories, good and bad, each loaded into
//! the same model written once with candle and once with burn, in both load modes. Both
//! frameworks must give the same verdict (the same adapted layers, or the same `PeftError`
//! variant, which is the table's), a refusal must leave the model exactly as it was, and a good
//! adapter merged in each framework must give the same weights.
#![cfg(all(feature = "candle", feature = "burn"))]

mod burn_common;
mod peft_common;

use std::collections::BTreeMap;
use std::path::Path;

use moduletree::peft::{LoadMode, PeftError};
use peft_common::{
    BurnModel, CandleModel, EXPERT_FFN, EXPERTS, FFN, HIDDEN, RANK, VOCAB, banks, burn_model,
    candle_model, candle_state, candle_weights_as_burn, values,
};
use safetensors::Dtype;
use serde_json::{Value, json};

// ---- the adapter directories ----

/// A tensor to write: dtype, shape, little-endian bytes.
type Stored = (Dtype, Vec<usize>, Vec<u8>);

fn f32s(shape: Vec<usize>, values: &[f32]) -> Stored {
    (
        Dtype::F32,
        shape,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

struct Case {
    name: &'static str,
    config: Value,
    tensors: BTreeMap<String, Stored>,
    /// `Ok(adapted paths)` or `Err(PeftError variant)`.
    expected: Result<Vec<&'static str>, &'static str>,
}

const PREFIX: &str = "base_model.model.";

fn pair(tensors: &mut BTreeMap<String, Stored>, path: &str, [out, inp]: [usize; 2], rank: usize) {
    let a = values(&format!("{path}.A"), rank * inp);
    let b = values(&format!("{path}.B"), out * rank);
    tensors.insert(
        format!("{PREFIX}{path}.lora_A.weight"),
        f32s(vec![rank, inp], &a),
    );
    tensors.insert(
        format!("{PREFIX}{path}.lora_B.weight"),
        f32s(vec![out, rank], &b),
    );
}

fn base_config() -> Value {
    json!({
        "peft_type": "LORA",
        "r": RANK,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj"],
        "lora_dropout": 0.0,
        "bias": "none",
    })
}

const QV: [&str; 4] = [
    "layers.0.q_proj",
    "layers.0.v_proj",
    "layers.1.q_proj",
    "layers.1.v_proj",
];

fn qv_tensors() -> BTreeMap<String, Stored> {
    let mut tensors = BTreeMap::new();
    for path in QV {
        pair(&mut tensors, path, [HIDDEN, HIDDEN], RANK);
    }
    tensors
}

fn case(
    name: &'static str,
    edit: impl FnOnce(&mut Value, &mut BTreeMap<String, Stored>),
    expected: Result<Vec<&'static str>, &'static str>,
) -> Case {
    let mut config = base_config();
    let mut tensors = qv_tensors();
    edit(&mut config, &mut tensors);
    Case {
        name,
        config,
        tensors,
        expected,
    }
}

/// The whole weights of both layers' `mlp.up` and `mlp.down`, as `modules_to_save` stores them.
fn saved_mlps() -> BTreeMap<String, Stored> {
    let mut t = BTreeMap::new();
    for index in 0..2 {
        for (layer, [out, inp], bias) in
            [("up", [FFN, HIDDEN], true), ("down", [HIDDEN, FFN], false)]
        {
            let path = format!("layers.{index}.mlp.{layer}");
            let w = values(&format!("{path} saved"), out * inp);
            t.insert(format!("{PREFIX}{path}.weight"), f32s(vec![out, inp], &w));
            if bias {
                let b = values(&format!("{path} saved bias"), out);
                t.insert(format!("{PREFIX}{path}.bias"), f32s(vec![out], &b));
            }
        }
    }
    t
}

/// Factor pairs for both layers' expert banks, as PEFT keys them: on the owning module
/// `layers.N.moe.experts`, the banks nested in registration order (gate_up_proj, then
/// down_proj). `order` lists which banks (0 gate_up_proj, 1 down_proj) are saved, innermost
/// first.
fn bank_pairs(t: &mut BTreeMap<String, Stored>, rank: usize, order: &[usize]) {
    for index in 0..2 {
        let module = format!("layers.{index}.moe.experts");
        let all = banks(index);
        for (position, &bank) in order.iter().enumerate() {
            let (_, [experts, out, input]) = &all[bank];
            let depth = order.len() - 1 - position;
            let key = format!("{module}{}", ".base_layer".repeat(depth));
            let a = values(&format!("{key} A"), experts * rank * input);
            let b = values(&format!("{key} B"), out * rank * experts);
            t.insert(
                format!("{PREFIX}{key}.lora_A.weight"),
                f32s(vec![experts * rank, *input], &a),
            );
            t.insert(
                format!("{PREFIX}{key}.lora_B.weight"),
                f32s(vec![*out, rank * experts], &b),
            );
        }
    }
}

/// An embedding adapter on `embed` and, as PEFT saves it with `ensure_weight_tying`, its
/// transpose on the tied `lm_head`.
fn tied_head(t: &mut BTreeMap<String, Stored>) {
    let a = values("embed.A", RANK * VOCAB);
    let b = values("embed.B", HIDDEN * RANK);
    let transpose = |values: &[f32], rows: usize, cols: usize| -> Vec<f32> {
        (0..cols)
            .flat_map(|c| (0..rows).map(move |r| (r, c)))
            .map(|(r, c)| values[r * cols + c])
            .collect()
    };
    t.insert(
        format!("{PREFIX}embed.lora_embedding_A"),
        f32s(vec![RANK, VOCAB], &a),
    );
    t.insert(
        format!("{PREFIX}embed.lora_embedding_B"),
        f32s(vec![HIDDEN, RANK], &b),
    );
    // lm_head: A = Bᵀ [r, hidden], B = Aᵀ [vocab, r]
    t.insert(
        format!("{PREFIX}lm_head.lora_A.weight"),
        f32s(vec![RANK, HIDDEN], &transpose(&b, HIDDEN, RANK)),
    );
    t.insert(
        format!("{PREFIX}lm_head.lora_B.weight"),
        f32s(vec![VOCAB, RANK], &transpose(&a, RANK, VOCAB)),
    );
}

fn convert(tensors: &mut BTreeMap<String, Stored>, dtype: Dtype) {
    for (stored_dtype, _, bytes) in tensors.values_mut() {
        let floats: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        *bytes = match dtype {
            Dtype::F64 => floats
                .iter()
                .flat_map(|v| f64::from(*v).to_le_bytes())
                .collect(),
            // bfloat16: the high half of the f32
            Dtype::BF16 => floats
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes()[2..].to_vec())
                .collect(),
            Dtype::I32 => floats
                .iter()
                .flat_map(|v| (*v as i32).to_le_bytes())
                .collect(),
            _ => unreachable!(),
        };
        *stored_dtype = dtype;
    }
}

#[expect(clippy::too_many_lines, reason = "the table, one case per entry")]
fn cases() -> Vec<Case> {
    let qv = || Ok(QV.to_vec());
    let key = |path: &str, factor: &str| format!("{PREFIX}{path}.lora_{factor}.weight");
    let mut cases = vec![
        case("good", |_, _| {}, qv()),
        case(
            "no prefix",
            |_, t| {
                *t = std::mem::take(t)
                    .into_iter()
                    .map(|(k, v)| (k.replace(PREFIX, ""), v))
                    .collect()
            },
            qv(),
        ),
        case(
            "adapter-name infix",
            |_, t| {
                *t = std::mem::take(t)
                    .into_iter()
                    .map(|(k, v)| (k.replace(".weight", ".default.weight"), v))
                    .collect();
            },
            qv(),
        ),
        case(
            "embedding factors",
            |c, t| {
                c["target_modules"] = json!(["q_proj", "v_proj", "embed"]);
                let a = values("embed.A", RANK * VOCAB);
                let b = values("embed.B", HIDDEN * RANK);
                t.insert(
                    format!("{PREFIX}embed.lora_embedding_A"),
                    f32s(vec![RANK, VOCAB], &a),
                );
                t.insert(
                    format!("{PREFIX}embed.lora_embedding_B"),
                    f32s(vec![HIDDEN, RANK], &b),
                );
            },
            Ok(vec!["embed", QV[0], QV[1], QV[2], QV[3]]),
        ),
        case(
            "a tied head with ensure_weight_tying",
            |c, t| {
                c["target_modules"] = json!(["q_proj", "v_proj", "embed"]);
                c["ensure_weight_tying"] = json!(true);
                tied_head(t);
            },
            Ok(vec!["embed", QV[0], QV[1], QV[2], QV[3], "lm_head"]),
        ),
        case(
            "a tied head's factors without ensure_weight_tying",
            |c, t| {
                c["target_modules"] = json!(["q_proj", "v_proj", "embed"]);
                tied_head(t);
            },
            Err("NotSelected"),
        ),
        case(
            "fused experts through target_parameters",
            |c, t| {
                c["target_parameters"] = json!(["experts.gate_up_proj", "experts.down_proj"]);
                bank_pairs(t, RANK, &[0, 1]);
            },
            Ok(vec![
                QV[0],
                QV[1],
                "layers.0.moe.experts.gate_up_proj",
                "layers.0.moe.experts.down_proj",
                QV[2],
                QV[3],
                "layers.1.moe.experts.gate_up_proj",
                "layers.1.moe.experts.down_proj",
            ]),
        ),
        case(
            "one bank of a module through target_parameters",
            |c, t| {
                c["target_parameters"] = json!(["moe.experts.down_proj"]);
                bank_pairs(t, RANK, &[1]);
            },
            Ok(vec![
                QV[0],
                QV[1],
                "layers.0.moe.experts.down_proj",
                QV[2],
                QV[3],
                "layers.1.moe.experts.down_proj",
            ]),
        ),
        case(
            "bank factors nested the wrong way round",
            |c, t| {
                c["target_parameters"] = json!(["experts.gate_up_proj", "experts.down_proj"]);
                bank_pairs(t, RANK, &[1, 0]);
            },
            Err("Shape"),
        ),
        case(
            "bank factors of another rank",
            |c, t| {
                c["target_parameters"] = json!(["experts.gate_up_proj", "experts.down_proj"]);
                c["rank_pattern"] = json!({"experts.down_proj": 2});
                bank_pairs(t, RANK, &[0, 1]);
            },
            Err("Rank"),
        ),
        case(
            "a bank's rank pattern",
            |c, t| {
                c["target_parameters"] = json!(["experts.gate_up_proj", "experts.down_proj"]);
                c["rank_pattern"] = json!({"layers.1.moe.experts.down_proj": 2});
                bank_pairs(t, RANK, &[0, 1]);
                // Layer 1's down_proj at rank 2.
                let module = "layers.1.moe.experts";
                let a = values("bank l1 A", EXPERTS * 2 * EXPERT_FFN);
                let b = values("bank l1 B", HIDDEN * 2 * EXPERTS);
                t.insert(
                    format!("{PREFIX}{module}.lora_A.weight"),
                    f32s(vec![EXPERTS * 2, EXPERT_FFN], &a),
                );
                t.insert(
                    format!("{PREFIX}{module}.lora_B.weight"),
                    f32s(vec![HIDDEN, 2 * EXPERTS], &b),
                );
            },
            Ok(vec![
                QV[0],
                QV[1],
                "layers.0.moe.experts.gate_up_proj",
                "layers.0.moe.experts.down_proj",
                QV[2],
                QV[3],
                "layers.1.moe.experts.gate_up_proj",
                "layers.1.moe.experts.down_proj",
            ]),
        ),
        case(
            "per-expert factors fused into the banks",
            |c, t| {
                c["target_modules"] =
                    json!(["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]);
                c["rank_pattern"] = json!({"experts.1.down_proj": 2});
                for index in 0..2 {
                    for expert in 0..EXPERTS {
                        let at = |name: &str| format!("layers.{index}.moe.experts.{expert}.{name}");
                        let rank = |name: &str| {
                            if expert == 1 && name == "down_proj" {
                                2
                            } else {
                                RANK
                            }
                        };
                        pair(t, &at("gate_proj"), [EXPERT_FFN, HIDDEN], rank("gate_proj"));
                        pair(t, &at("up_proj"), [EXPERT_FFN, HIDDEN], rank("up_proj"));
                        pair(t, &at("down_proj"), [HIDDEN, EXPERT_FFN], rank("down_proj"));
                    }
                }
            },
            Ok(vec![
                QV[0],
                QV[1],
                "layers.0.moe.experts.gate_up_proj",
                "layers.0.moe.experts.down_proj",
                QV[2],
                QV[3],
                "layers.1.moe.experts.gate_up_proj",
                "layers.1.moe.experts.down_proj",
            ]),
        ),
        case(
            "per-expert factors for an expert the bank does not have",
            |_, t| {
                pair(
                    t,
                    "layers.0.moe.experts.7.down_proj",
                    [HIDDEN, EXPERT_FFN],
                    RANK,
                )
            },
            Err("NotAdaptable"),
        ),
        case(
            "bank factors without target_parameters",
            |_, t| bank_pairs(t, RANK, &[0, 1]),
            Err("NotAdaptable"),
        ),
        case(
            "head factors",
            |c, t| {
                c["target_modules"] = json!(["q_proj", "v_proj", "lm_head"]);
                pair(t, "lm_head", [VOCAB, HIDDEN], RANK);
            },
            Ok(vec![QV[0], QV[1], QV[2], QV[3], "lm_head"]),
        ),
        case(
            "rank pattern",
            |c, t| {
                c["rank_pattern"] = json!({"v_proj": 2});
                pair(t, "layers.0.v_proj", [HIDDEN, HIDDEN], 2);
                pair(t, "layers.1.v_proj", [HIDDEN, HIDDEN], 2);
            },
            qv(),
        ),
        case(
            "alpha pattern",
            |c, _| c["alpha_pattern"] = json!({"layers.1.q_proj": 3.5}),
            qv(),
        ),
        case("rslora", |c, _| c["use_rslora"] = json!(true), qv()),
        case("negative alpha", |c, _| c["lora_alpha"] = json!(-4), qv()),
        case("zero alpha", |c, _| c["lora_alpha"] = json!(0), qv()),
        case("f64 factors", |_, t| convert(t, Dtype::F64), qv()),
        case("bf16 factors", |_, t| convert(t, Dtype::BF16), qv()),
        case(
            "integer factors",
            |_, t| convert(t, Dtype::I32),
            Err("Dtype"),
        ),
        case(
            "layers_to_transform keeps a layer the file has",
            |c, t| {
                c["layers_to_transform"] = json!([0]);
                t.retain(|k, _| k.contains("layers.0."));
            },
            Ok(vec![QV[0], QV[1]]),
        ),
        case(
            "layers_to_transform leaves out a layer the file has",
            |c, _| c["layers_to_transform"] = json!([0]),
            Err("NotSelected"),
        ),
        case(
            "layers_pattern names the list",
            |c, t| {
                c["layers_to_transform"] = json!(1);
                c["layers_pattern"] = json!("layers");
                t.retain(|k, _| k.contains("layers.1."));
            },
            Ok(vec![QV[2], QV[3]]),
        ),
        case(
            "layers_pattern names no module",
            |c, _| {
                c["layers_to_transform"] = json!([0]);
                c["layers_pattern"] = json!("blocks");
            },
            Err("Selection"),
        ),
        case(
            "exclude_modules leaves out a layer the file has",
            |c, _| c["exclude_modules"] = json!(["layers.1.v_proj"]),
            Err("NotSelected"),
        ),
        case(
            "exclude_modules as a regex",
            |c, t| {
                c["exclude_modules"] = json!(r".*\.1\.v_proj");
                t.retain(|k, _| !k.contains("layers.1.v_proj"));
            },
            Ok(vec![QV[0], QV[1], QV[2]]),
        ),
        case(
            "target_modules matches nothing",
            |c, _| c["target_modules"] = json!(["q_proj", "v_proj", "k_proj"]),
            Err("Selection"),
        ),
        case(
            "a pair for an untargeted layer",
            |_, t| pair(t, "layers.0.mlp.up", [FFN, HIDDEN], RANK),
            Err("NotSelected"),
        ),
        case(
            "a targeted layer without factors",
            |c, _| c["target_modules"] = json!(["q_proj", "v_proj", "down"]),
            Err("Missing"),
        ),
        case(
            "modules_to_save loads the head whole",
            |c, t| {
                c["modules_to_save"] = json!(["lm_head"]);
                let head = values("saved head", VOCAB * HIDDEN);
                t.insert(
                    format!("{PREFIX}lm_head.weight"),
                    f32s(vec![VOCAB, HIDDEN], &head),
                );
            },
            qv(),
        ),
        case(
            "a target only inside modules_to_save is left out",
            |c, t| {
                // `up` is a target, but it lies inside `mlp`, which is saved whole.
                c["target_modules"] = json!(["q_proj", "v_proj", "up"]);
                c["modules_to_save"] = json!(["mlp"]);
                t.extend(saved_mlps());
            },
            qv(),
        ),
        case(
            "modules_to_save loads a whole subtree",
            |c, t| {
                c["modules_to_save"] = json!(["mlp"]);
                t.extend(saved_mlps());
            },
            qv(),
        ),
        case(
            "modules_to_save without its weights",
            |c, _| c["modules_to_save"] = json!(["lm_head"]),
            Err("MissingSaved"),
        ),
        case(
            "modules_to_save names no module",
            |c, _| c["modules_to_save"] = json!(["classifier"]),
            Err("NoSuchModule"),
        ),
        case(
            "a whole weight outside modules_to_save",
            |_, t| {
                let head = values("head", VOCAB * HIDDEN);
                t.insert(
                    format!("{PREFIX}lm_head.weight"),
                    f32s(vec![VOCAB, HIDDEN], &head),
                );
            },
            Err("UnknownTensor"),
        ),
        case(
            "factors inside a module saved whole",
            |c, t| {
                c["modules_to_save"] = json!(["lm_head"]);
                let head = values("saved head", VOCAB * HIDDEN);
                t.insert(
                    format!("{PREFIX}lm_head.weight"),
                    f32s(vec![VOCAB, HIDDEN], &head),
                );
                pair(t, "lm_head", [VOCAB, HIDDEN], RANK);
            },
            Err("NotSelected"),
        ),
        case("rank 0", |c, _| c["r"] = json!(0), Err("Config")),
        case(
            "alpha not a number",
            |c, _| c["lora_alpha"] = json!("8"),
            Err("Config"),
        ),
        case(
            "dropout 1.5",
            |c, _| c["lora_dropout"] = json!(1.5),
            Err("Config"),
        ),
        case(
            "half a pair",
            |_, t| {
                t.remove(&key("layers.1.v_proj", "B"));
            },
            Err("Unpaired"),
        ),
        case(
            "one factor twice",
            |_, t| {
                let a = t[&key("layers.0.q_proj", "A")].clone();
                t.insert(format!("{PREFIX}layers.0.q_proj.lora_A.other.weight"), a);
            },
            Err("Conflict"),
        ),
        case(
            "a factor transposed",
            |_, t| {
                let (dtype, _, bytes) = t[&key("layers.0.q_proj", "A")].clone();
                t.insert(
                    key("layers.0.q_proj", "A"),
                    (dtype, vec![HIDDEN * 2, RANK / 2], bytes),
                );
            },
            Err("Shape"),
        ),
        case(
            "a rank the config does not give",
            |c, _| c["r"] = json!(2),
            Err("Rank"),
        ),
        case(
            "factors on a norm",
            |c, t| {
                c["target_modules"] = json!(["q_proj", "v_proj", "norm"]);
                pair(t, "norm", [HIDDEN, HIDDEN], RANK);
            },
            Err("NotAdaptable"),
        ),
        case(
            "factors on a container",
            |_, t| pair(t, "layers.0", [HIDDEN, HIDDEN], RANK),
            Err("NotAdaptable"),
        ),
        case(
            "an index written with a leading zero",
            |_, t| {
                *t = std::mem::take(t)
                    .into_iter()
                    .map(|(k, v)| (k.replace("layers.1.", "layers.01."), v))
                    .collect();
            },
            Err("NoSuchModule"),
        ),
        case(
            "factors on a module the model lacks",
            |_, t| pair(t, "layers.7.q_proj", [HIDDEN, HIDDEN], RANK),
            Err("NoSuchModule"),
        ),
        case(
            "a linear's factor names on an embedding",
            |c, t| {
                c["target_modules"] = json!(["q_proj", "v_proj", "embed"]);
                pair(t, "embed", [HIDDEN, VOCAB], RANK);
            },
            Err("NotAdaptable"),
        ),
        case(
            "a DoRA magnitude vector",
            |_, t| {
                let m = values("m", HIDDEN);
                t.insert(
                    format!("{PREFIX}layers.0.q_proj.lora_magnitude_vector"),
                    f32s(vec![HIDDEN], &m),
                );
            },
            Err("UnknownTensor"),
        ),
    ];
    for (option, value) in [
        ("peft_type", json!("LOHA")),
        ("use_dora", json!(true)),
        ("lora_bias", json!(true)),
        ("bias", json!("all")),
        ("fan_in_fan_out", json!(true)),
        ("layer_replication", json!([[0, 2]])),
        ("trainable_token_indices", json!([1, 2])),
        ("alora_invocation_tokens", json!([3])),
        ("use_qalora", json!(true)),
        ("use_bdlora", json!({"nblocks": 2})),
        ("arrow_config", json!({"top_k": 2})),
        ("monteclora_config", json!({"num_samples": 2})),
        ("init_lora_weights", json!("pissa")),
        ("init_lora_weights", json!("pissa_niter_4")),
        ("init_lora_weights", json!("olora")),
        ("init_lora_weights", json!("corda")),
        ("init_lora_weights", json!("loftq")),
        ("init_lora_weights", json!("lora_ga")),
    ] {
        let mut config = base_config();
        config[option] = value;
        cases.push(Case {
            name: option,
            config,
            tensors: qv_tensors(),
            expected: Err("Refused"),
        });
    }
    cases
}

fn write_case(case: &Case, dir: &Path) {
    std::fs::write(dir.join("adapter_config.json"), case.config.to_string()).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = case
        .tensors
        .iter()
        .map(|(name, (dtype, shape, bytes))| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("adapter_model.safetensors")).unwrap();
}

fn variant(error: &PeftError) -> &'static str {
    match error {
        PeftError::Io { .. } => "Io",
        PeftError::Config { .. } => "Config",
        PeftError::Refused { .. } => "Refused",
        PeftError::Selection { .. } => "Selection",
        PeftError::Safetensors { .. } => "Safetensors",
        PeftError::UnknownTensor { .. } => "UnknownTensor",
        PeftError::Dtype { .. } => "Dtype",
        PeftError::NoSuchModule { .. } => "NoSuchModule",
        PeftError::NotAdaptable { .. } => "NotAdaptable",
        PeftError::Conflict { .. } => "Conflict",
        PeftError::Unpaired { .. } => "Unpaired",
        PeftError::Shape { .. } => "Shape",
        PeftError::Rank { .. } => "Rank",
        PeftError::NotSelected { .. } => "NotSelected",
        PeftError::Missing { .. } => "Missing",
        PeftError::MissingSaved { .. } => "MissingSaved",
        PeftError::NotASlot { .. } => "NotASlot",
        PeftError::DuplicateAdapter { .. } => "DuplicateAdapter",
        PeftError::ReadOnly { .. } => "ReadOnly",
        PeftError::Merged { .. } => "Merged",
        PeftError::NothingToSave { .. } => "NothingToSave",
        PeftError::ConfigMismatch { .. } => "ConfigMismatch",
        PeftError::Tensor { .. } => "Tensor",
        _ => "another variant",
    }
}

type Verdict = Result<Vec<(String, u32, u64)>, &'static str>;

fn verdict(result: Result<Vec<moduletree::peft::AdaptedLayer>, PeftError>) -> Verdict {
    result
        .map(|layers| {
            layers
                .into_iter()
                .map(|layer| (layer.path, layer.rank, layer.scale.to_bits()))
                .collect()
        })
        .map_err(|error| {
            // Every message names something to look at.
            assert!(error.to_string().contains('`'), "{error}");
            variant(&error)
        })
}

#[test]
fn candle_and_burn_give_every_adapter_the_same_verdict() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let dir = scratch.path().join(index.to_string());
        std::fs::create_dir(&dir).unwrap();
        write_case(case, &dir);
        for mode in [LoadMode::Attach, LoadMode::Merge] {
            let mut candle = candle_model();
            let candle_before = candle_state(&candle);
            let from_candle = verdict(moduletree::candle::load_peft_adapter(
                &mut candle,
                &dir,
                mode,
            ));
            let mut burn = burn_model();
            let burn_before = burn_common::snapshot(&burn);
            let from_burn = verdict(moduletree::burn::load_peft_adapter(&mut burn, &dir, mode));
            let label = format!("{} ({mode:?})", case.name);
            if from_candle != from_burn {
                failures.push(format!(
                    "{label}: candle {from_candle:?}, burn {from_burn:?}"
                ));
                continue;
            }
            match (&from_candle, &case.expected) {
                (Ok(layers), Ok(paths)) => {
                    let found: Vec<&str> = layers.iter().map(|(path, ..)| path.as_str()).collect();
                    if &found != paths {
                        failures.push(format!("{label}: adapted {found:?}, expected {paths:?}"));
                    }
                    if mode == LoadMode::Merge {
                        // One file, one model: the merged weights agree across frameworks.
                        let burn_weights = burn_common::snapshot(&burn);
                        for (path, weights) in candle_weights_as_burn(&candle) {
                            let other = &burn_weights[&path];
                            let diff = weights
                                .iter()
                                .zip(other)
                                .map(|(a, b)| (a - b).abs())
                                .fold(0.0_f32, f32::max);
                            if diff > 1e-5 {
                                failures.push(format!("{label}: {path} differs by {diff}"));
                            }
                        }
                    }
                }
                (Err(found), Err(expected)) => {
                    if found != expected {
                        failures.push(format!(
                            "{label}: refused with {found}, expected {expected}"
                        ));
                    }
                    if candle_state(&candle) != candle_before {
                        failures.push(format!("{label}: the candle model changed"));
                    }
                    if burn_common::snapshot(&burn) != burn_before {
                        failures.push(format!("{label}: the burn model changed"));
                    }
                }
                (found, expected) => {
                    failures.push(format!("{label}: got {found:?}, expected {expected:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_head_saved_whole_replaces_the_heads_weight_in_both() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "modules_to_save loads the head whole")
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    write_case(&case, scratch.path());
    let saved = values("saved head", VOCAB * HIDDEN);
    let mut candle = candle_model();
    moduletree::candle::load_peft_adapter(&mut candle, scratch.path(), LoadMode::Attach).unwrap();
    let head = candle
        .lm_head
        .base()
        .weight()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(head, saved);
    let mut burn = burn_model();
    moduletree::burn::load_peft_adapter(&mut burn, scratch.path(), LoadMode::Attach).unwrap();
    let head = burn
        .lm_head
        .weight
        .val()
        .transpose()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(head, saved);
}

#[test]
fn a_weight_is_not_loaded_under_a_merged_adapter() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "modules_to_save loads the head whole")
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    write_case(&case, scratch.path());
    let mut candle = candle_model();
    let device = candle_core::Device::Cpu;
    let a = candle_core::Tensor::ones((2, HIDDEN), candle_core::DType::F32, &device).unwrap();
    let b = candle_core::Tensor::ones((VOCAB, 2), candle_core::DType::F32, &device).unwrap();
    let adapter = moduletree::candle::LoraAdapter::new(a, b, 2.0, false).unwrap();
    candle.lm_head.add_adapter("head", adapter).unwrap();
    candle.lm_head.merge().unwrap();
    let before = candle_state(&candle);
    let error =
        moduletree::candle::load_peft_adapter(&mut candle, scratch.path(), LoadMode::Attach)
            .unwrap_err();
    assert!(
        matches!(&error, PeftError::Merged { path, adapter } if path == "lm_head" && adapter == "head"),
        "{error}"
    );
    assert_eq!(candle_state(&candle), before, "the model is unchanged");
}

#[test]
fn loading_twice_is_refused_the_same_way_in_both() {
    let case = cases().into_iter().next().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    write_case(&case, scratch.path());
    let mut candle = candle_model();
    moduletree::candle::load_peft_adapter(&mut candle, scratch.path(), LoadMode::Attach).unwrap();
    let before = candle_state(&candle);
    let again =
        moduletree::candle::load_peft_adapter(&mut candle, scratch.path(), LoadMode::Attach);
    assert_eq!(verdict(again), Err("DuplicateAdapter"));
    assert_eq!(candle_state(&candle), before);
    let mut burn = burn_model();
    moduletree::burn::load_peft_adapter(&mut burn, scratch.path(), LoadMode::Attach).unwrap();
    let before = burn_common::snapshot(&burn);
    let again = moduletree::burn::load_peft_adapter(&mut burn, scratch.path(), LoadMode::Attach);
    assert_eq!(verdict(again), Err("DuplicateAdapter"));
    assert_eq!(burn_common::snapshot(&burn), before);
}

#[test]
fn missing_and_broken_files_are_refused_alike() {
    let scratch = tempfile::tempdir().unwrap();
    let good = cases().into_iter().next().unwrap();
    let load = |dir: &Path| {
        let candle = verdict(moduletree::candle::load_peft_adapter(
            &mut candle_model(),
            dir,
            LoadMode::Merge,
        ));
        let burn = verdict(moduletree::burn::load_peft_adapter(
            &mut burn_model(),
            dir,
            LoadMode::Merge,
        ));
        assert_eq!(candle, burn, "{}", dir.display());
        candle
    };
    assert_eq!(load(scratch.path()), Err("Io"));
    write_case(&good, scratch.path());
    std::fs::write(
        scratch.path().join("adapter_model.safetensors"),
        b"not safetensors",
    )
    .unwrap();
    assert_eq!(load(scratch.path()), Err("Safetensors"));
    std::fs::write(scratch.path().join("adapter_config.json"), b"{ not json").unwrap();
    assert_eq!(load(scratch.path()), Err("Config"));
    std::fs::remove_file(scratch.path().join("adapter_model.safetensors")).unwrap();
    std::fs::write(
        scratch.path().join("adapter_config.json"),
        base_config().to_string(),
    )
    .unwrap();
    assert_eq!(load(scratch.path()), Err("Io"));
}

#[test]
fn apply_lora_takes_the_config_alone_and_agrees_in_both() {
    let mut config = moduletree::peft::LoraConfig::new(4, 8.0)
        .rslora(true)
        .with_target_modules(["q_proj", "v_proj", "up"]);
    config.rank_pattern.insert("v_proj".to_owned(), 2);
    config
        .alpha_pattern
        .insert("layers.1.mlp.up".to_owned(), 3.0);
    config.exclude_modules = Some(moduletree::peft::TargetModules::List(vec![
        "layers.0.mlp.up".to_owned(),
    ]));
    let mut candle = candle_model();
    let varmap = candle_nn::VarMap::new();
    let from_candle = verdict(moduletree::candle::apply_lora(
        &mut candle,
        &config,
        &varmap,
    ));
    let (burn, adapted) = moduletree::burn::apply_lora(burn_model(), &config).unwrap();
    assert_eq!(from_candle, verdict(Ok(adapted.clone())));
    let layers: Vec<(&str, u32, f64)> = adapted
        .iter()
        .map(|layer| (layer.path.as_str(), layer.rank, layer.alpha))
        .collect();
    assert_eq!(
        layers,
        [
            ("layers.0.q_proj", 4, 8.0),
            ("layers.0.v_proj", 2, 8.0),
            ("layers.1.q_proj", 4, 8.0),
            ("layers.1.v_proj", 2, 8.0),
            ("layers.1.mlp.up", 4, 3.0),
        ]
    );
    // rsLoRA: alpha / √r, in burn's adapters as in candle's.
    for layer in &adapted {
        assert!((layer.scale - layer.alpha / f64::from(layer.rank).sqrt()).abs() < 1e-12);
    }
    let burn_scales: Vec<f64> = {
        let mut scales = Vec::new();
        moduletree::walk(&burn, |node| {
            if let Some(linear) = node.downcast_ref::<burn::nn::Linear>()
                && let Some(adapter) = linear.weight.adapter()
            {
                scales.push(adapter.scale);
            }
        });
        scales
    };
    assert_eq!(burn_scales.len(), adapted.len());
    for (burn_scale, layer) in burn_scales.iter().zip(&adapted) {
        assert!((burn_scale - layer.scale).abs() < 1e-12, "{}", layer.path);
    }
    assert_eq!(varmap.all_vars().len(), 2 * adapted.len());
    // Both save what they applied, and the files read back to the same layers.
    for save in [
        |dir: &Path, candle: &CandleModel, _: &BurnModel, config| {
            moduletree::candle::save_peft_adapter(candle, dir, config)
        },
        |dir: &Path, _: &CandleModel, burn: &BurnModel, config| {
            moduletree::burn::save_peft_adapter(burn, dir, config)
        },
    ] {
        let scratch = tempfile::tempdir().unwrap();
        let saved = save(scratch.path(), &candle, &burn, &config).unwrap();
        assert_eq!(verdict(Ok(saved)), verdict(Ok(adapted.clone())));
        let mut fresh = candle_model();
        let loaded =
            moduletree::candle::load_peft_adapter(&mut fresh, scratch.path(), LoadMode::Attach);
        assert_eq!(verdict(loaded), verdict(Ok(adapted.clone())));
    }
}

#[test]
fn an_adapter_on_lm_head_is_saved_with_its_base_copy_as_peft_saves_it() {
    // PEFT's `save_embedding_layers="auto"`: `target_modules` names `lm_head`, one of PEFT's
    // embedding layer names, so the file also holds `lm_head.base_layer.weight`.
    let case = cases()
        .into_iter()
        .find(|c| c.name == "head factors")
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    write_case(&case, scratch.path());
    let config = moduletree::peft::Adapter::read(scratch.path())
        .unwrap()
        .config()
        .clone();
    let mut candle = candle_model();
    moduletree::candle::load_peft_adapter(&mut candle, scratch.path(), LoadMode::Attach).unwrap();
    let mut burn = burn_model();
    moduletree::burn::load_peft_adapter(&mut burn, scratch.path(), LoadMode::Attach).unwrap();
    let head = values("lm_head.weight", VOCAB * HIDDEN);
    let candle_dir = tempfile::tempdir().unwrap();
    moduletree::candle::save_peft_adapter(&candle, candle_dir.path(), &config).unwrap();
    let burn_dir = tempfile::tempdir().unwrap();
    moduletree::burn::save_peft_adapter(&burn, burn_dir.path(), &config).unwrap();
    for dir in [candle_dir.path(), burn_dir.path()] {
        let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let copy = file
            .tensor(&format!("{PREFIX}lm_head.base_layer.weight"))
            .unwrap();
        assert_eq!(copy.shape(), [VOCAB, HIDDEN]);
        let found: Vec<f32> = copy
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(found, head);
        assert!(
            file.tensor(&format!("{PREFIX}layers.0.q_proj.base_layer.weight"))
                .is_err()
        );
        // And it loads back.
        let mut fresh = candle_model();
        moduletree::candle::load_peft_adapter(&mut fresh, dir, LoadMode::Merge).unwrap();
    }
}

#[test]
fn expert_banks_save_as_peft_keys_them_and_load_back_in_both() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "fused experts through target_parameters")
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    write_case(&case, scratch.path());
    let config = moduletree::peft::Adapter::read(scratch.path())
        .unwrap()
        .config()
        .clone();
    let mut candle = candle_model();
    let loaded = verdict(moduletree::candle::load_peft_adapter(
        &mut candle,
        scratch.path(),
        LoadMode::Attach,
    ));
    let mut burn = burn_model();
    moduletree::burn::load_peft_adapter(&mut burn, scratch.path(), LoadMode::Attach).unwrap();
    let candle_dir = tempfile::tempdir().unwrap();
    let burn_dir = tempfile::tempdir().unwrap();
    let saved = verdict(moduletree::candle::save_peft_adapter(
        &candle,
        candle_dir.path(),
        &config,
    ));
    assert_eq!(saved, loaded);
    moduletree::burn::save_peft_adapter(&burn, burn_dir.path(), &config).unwrap();
    for dir in [candle_dir.path(), burn_dir.path()] {
        let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<String> = file.names().into_iter().map(str::to_owned).collect();
        names.sort();
        let mut expected: Vec<String> = case.tensors.keys().cloned().collect();
        expected.sort();
        assert_eq!(names, expected, "{}", dir.display());
        for (name, (_, shape, bytes)) in &case.tensors {
            let tensor = file.tensor(name).unwrap();
            assert_eq!(tensor.shape(), shape.as_slice(), "{name}");
            assert_eq!(tensor.data(), bytes.as_slice(), "{name}: the same values");
        }
        let written: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            written["target_parameters"],
            json!(["down_proj", "gate_up_proj"])
        );
        assert_eq!(written["target_modules"], json!(["q_proj", "v_proj"]));
        let mut fresh = candle_model();
        assert_eq!(
            verdict(moduletree::candle::load_peft_adapter(
                &mut fresh,
                dir,
                LoadMode::Attach
            )),
            loaded
        );
    }

    // Split back to per-expert factors, both write the same file, which loads back (fused again)
    // to the same layers.
    let names = moduletree::peft::PerExpertNames::GATE_UP_DOWN;
    let candle_split = tempfile::tempdir().unwrap();
    let burn_split = tempfile::tempdir().unwrap();
    moduletree::candle::save_peft_adapter_per_expert(
        &mut candle,
        candle_split.path(),
        &config,
        names,
    )
    .unwrap();
    moduletree::burn::save_peft_adapter_per_expert(&mut burn, burn_split.path(), &config, names)
        .unwrap();
    let read = |dir: &Path| std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    assert_eq!(read(candle_split.path()), read(burn_split.path()));
    let bytes = read(candle_split.path());
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(
        file.names()
            .iter()
            .any(|name| name.ends_with("layers.1.moe.experts.1.up_proj.lora_B.weight")),
        "{:?}",
        file.names()
    );
    // Fused again, gate and up stack their ranks, so compare what the adapters do: the merged
    // weights.
    let merged = |dir: &Path| {
        let mut model = candle_model();
        moduletree::candle::load_peft_adapter(&mut model, dir, LoadMode::Merge).unwrap();
        candle_state(&model)
    };
    let (original, split) = (merged(scratch.path()), merged(candle_split.path()));
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        split.keys().collect::<Vec<_>>()
    );
    for ((name, left), right) in original.iter().zip(split.values()) {
        let diff = left
            .iter()
            .zip(right)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0_f32, f32::max);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
}

#[test]
fn apply_lora_gives_expert_banks_fresh_factors_in_both() {
    let mut config = moduletree::peft::LoraConfig::new(4, 8.0).with_target_modules(["q_proj"]);
    config.target_parameters = Some(vec![
        "experts.gate_up_proj".into(),
        "experts.down_proj".into(),
    ]);
    let mut candle = candle_model();
    let varmap = candle_nn::VarMap::new();
    let from_candle = verdict(moduletree::candle::apply_lora(
        &mut candle,
        &config,
        &varmap,
    ));
    let (burn, adapted) = moduletree::burn::apply_lora(burn_model(), &config).unwrap();
    assert_eq!(from_candle, verdict(Ok(adapted.clone())));
    assert_eq!(adapted.len(), 6);
    let bank = &burn.layers[0].moe.experts.gate_up_proj;
    let lora = bank.lora.as_ref().expect("the bank has factors");
    assert_eq!(lora.a.shape().dims::<2>(), [EXPERTS * 4, HIDDEN]);
    assert_eq!(lora.b.shape().dims::<2>(), [2 * EXPERT_FFN, 4 * EXPERTS]);
    // Fresh B is zero: nothing changes until training. Both save the same keys.
    let candle_dir = tempfile::tempdir().unwrap();
    let burn_dir = tempfile::tempdir().unwrap();
    moduletree::candle::save_peft_adapter(&candle, candle_dir.path(), &config).unwrap();
    moduletree::burn::save_peft_adapter(&burn, burn_dir.path(), &config).unwrap();
    let keys = |dir: &Path| {
        let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<(String, Vec<usize>)> = file
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect();
        names.sort();
        names
    };
    assert_eq!(keys(candle_dir.path()), keys(burn_dir.path()));
    assert!(
        keys(candle_dir.path())
            .iter()
            .any(|(name, _)| name.ends_with("moe.experts.base_layer.lora_A.weight"))
    );

    // The lifecycle sees the banks' factors alike in both.
    assert_eq!(
        moduletree::candle::adapter_status(&candle),
        moduletree::burn::adapter_status(&burn)
    );
    let counts = moduletree::burn::parameter_counts(&burn);
    assert_eq!(moduletree::candle::parameter_counts(&candle), counts);
    let bank_factors = EXPERTS * 4 * HIDDEN + 2 * EXPERT_FFN * 4 * EXPERTS;
    assert!(
        counts.trainable > bank_factors,
        "the bank's factors are trainable: {counts:?}"
    );
    let (a, b) = moduletree::burn::lora_factor_groups(&burn);
    assert!(a.matches(&lora.a.id, None) && b.matches(&lora.b.id, None));

    // A plan applied by hand gives the banks their factors too.
    let resolution = config
        .target_spec()
        .unwrap()
        .resolve(&burn_model())
        .unwrap();
    let plan = moduletree::burn::LoraPlan::from_resolution(&burn_model(), &resolution).unwrap();
    let planned = plan.apply(burn_model());
    assert!(planned.layers[0].moe.experts.down_proj.lora.is_some());

    // Applying again over adapted layers is refused, the model kept.
    let error = moduletree::burn::apply_lora(burn, &config).unwrap_err();
    assert!(
        matches!(&error, PeftError::DuplicateAdapter { path, adapter } if path == "layers.0.q_proj" && adapter == "default"),
        "{error}"
    );
}

/// LoRA dropout on expert banks is refused by both, as PEFT's `ParamWrapper` refuses it (a file
/// saved with it would not load in PEFT), naming the bank; candle's store and model stay as they
/// were. The same dropout on linears alone is taken.
#[test]
fn lora_dropout_on_expert_banks_is_refused_in_both() {
    let mut config = moduletree::peft::LoraConfig::new(4, 8.0).with_target_modules(["q_proj"]);
    config.lora_dropout = 0.1;
    config.target_parameters = Some(vec!["experts.down_proj".into()]);
    let mut candle = candle_model();
    let varmap = candle_nn::VarMap::new();
    let error = moduletree::candle::apply_lora(&mut candle, &config, &varmap).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("layers.0.moe.experts.down_proj") && text.contains("takes no LoRA dropout"),
        "{text}"
    );
    assert!(varmap.all_vars().is_empty(), "no variable is left");
    assert_eq!(
        moduletree::candle::parameter_counts(&candle).trainable,
        0,
        "the model is unchanged"
    );
    let burn_error = moduletree::burn::apply_lora(burn_model(), &config).unwrap_err();
    assert_eq!(burn_error.to_string(), text);

    config.target_parameters = None;
    moduletree::candle::apply_lora(&mut candle, &config, &varmap).unwrap();
    moduletree::burn::apply_lora(burn_model(), &config).unwrap();
}

/// burn's `ExpertLora` has public fields: factors edited out of shape with the bank are refused
/// when saving, naming the bank, and nothing is written.
#[test]
fn burn_saves_refuse_bank_factors_that_do_not_fit() {
    let mut config = moduletree::peft::LoraConfig::new(4, 8.0);
    config.target_parameters = Some(vec!["experts.gate_up_proj".into()]);
    let (mut burn, _) = moduletree::burn::apply_lora(burn_model(), &config).unwrap();
    burn.layers[0]
        .moe
        .experts
        .gate_up_proj
        .lora
        .as_mut()
        .unwrap()
        .experts = EXPERTS + 1;
    let dir = tempfile::tempdir().unwrap();
    let error = moduletree::burn::save_peft_adapter(&burn, dir.path(), &config).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("layers.0.moe.experts.gate_up_proj")
            && text.contains("the bank's LoRA factors do not fit it"),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Banks at the model's root: transformers 4 has no per-expert names for them.
#[derive(moduletree::ModuleTree)]
struct RootExperts {
    experts: peft_common::CandleExperts,
}

#[test]
fn per_expert_saves_refuse_banks_without_a_block() {
    let mut model = RootExperts {
        experts: candle_model().layers.remove(0).moe.experts,
    };
    let mut config = moduletree::peft::LoraConfig::new(2, 4.0);
    config.target_modules = None;
    config.target_parameters = Some(vec!["experts.down_proj".into()]);
    moduletree::candle::apply_lora(&mut model, &config, &candle_nn::VarMap::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let error = moduletree::candle::save_peft_adapter_per_expert(
        &mut model,
        dir.path(),
        &config,
        moduletree::peft::PerExpertNames::GATE_UP_DOWN,
    )
    .unwrap_err();
    assert!(
        matches!(&error, PeftError::NotAdaptable { path, .. } if path == "experts.down_proj"),
        "{error}"
    );
    assert!(!dir.path().join("adapter_model.safetensors").exists());
}
