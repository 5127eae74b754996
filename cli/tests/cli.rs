//! The `moduletree` command as a user runs it: every `inspect` form in text and JSON, `merge`,
//! `plan`, and the errors for bad arguments and bad files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::Value;

fn moduletree(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moduletree"))
        .args(args)
        .output()
        .expect("the command runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&stdout(&moduletree(&args))).unwrap()
}

fn stderr_of_failure(args: &[&str], code: i32) -> String {
    let output = moduletree(args);
    assert_eq!(output.status.code(), Some(code), "{args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn lists_the_model_types_it_knows() {
    let text = stdout(&moduletree(&["inspect"]));
    let models: Vec<&str> = text
        .lines()
        .skip_while(|line| *line != "model types:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        models,
        [
            "DeepseekV3ForCausalLM",
            "LlamaForCausalLM",
            "MixtralForCausalLM",
            "Qwen2MoeForCausalLM"
        ],
        "{text}"
    );
    let listed = json(&["inspect"]);
    assert_eq!(listed["model_types"][2]["name"], "MixtralForCausalLM");
    assert_eq!(
        listed["model_types"][1]["linear_targets"],
        serde_json::json!([
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj"
        ])
    );
}

#[test]
fn prints_a_type_with_its_targets_and_experts() {
    let text = stdout(&moduletree(&["inspect", "MixtralForCausalLM"]));
    for line in [
        "    layers: <> × MixtralDecoderLayer\n",
        "        gate: Linear [router]\n",
        "          gate_up_proj: Bank [grouped_linear, expert, parallel=packed_column]\n",
        "  lm_head: Linear [linear, head, parallel=column_gather]\n",
        "router targets: gate\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    let value = json(&["inspect", "MixtralForCausalLM"]);
    assert_eq!(value["title"], "MixtralForCausalLM (moduletree::models)");
}

#[test]
fn resolves_targets_against_a_type() {
    let text = stdout(&moduletree(&[
        "inspect",
        "LlamaForCausalLM",
        "--target",
        "q_proj,mlp.down_proj",
    ]));
    assert!(text.contains("target `q_proj`: 1 layer(s)\n"), "{text}");
    assert!(
        text.contains("  model.layers.<>.mlp.down_proj × 1\n"),
        "{text}"
    );
    // A `re:` entry runs to the end of its argument: the comma of `{1,80}` is the regex's.
    let text = stdout(&moduletree(&[
        "inspect",
        "LlamaForCausalLM",
        "--target",
        r"q_proj,re:.{1,80}\.mlp\.down_proj",
    ]));
    assert!(
        text.contains("target `re:.{1,80}\\.mlp\\.down_proj`: 1 layer(s)\n"),
        "{text}"
    );
    // So does an optional `?re:` entry, after a comma and a space.
    let text = stdout(&moduletree(&[
        "inspect",
        "LlamaForCausalLM",
        "--target",
        r"q_proj, ?re:.{1,80}\.mlp\.down_proj",
    ]));
    assert!(
        text.contains("target `?re:.{1,80}\\.mlp\\.down_proj`: 1 layer(s)\n"),
        "{text}"
    );
    let error = stderr_of_failure(&["inspect", "LlamaForCausalLM", "--target", "q_prj"], 1);
    assert!(
        error.contains("target `q_prj` matches no module; did you mean `q_proj`"),
        "{error}"
    );
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    for args in [
        &["inspect", "LlamaForCausalLM", "extra"][..],
        &["inspect", "--checkpoint"],
        &["inspect", "LlamaForCausalLM", "--checkpoint", "x"],
        &["inspect", "--tower", "vision_tower"],
        &["merge", "--checkpoint", "x"],
        &["frobnicate"],
    ] {
        let error = stderr_of_failure(args, 2);
        assert!(error.starts_with("error: "), "{args:?}: {error}");
        assert!(
            error.contains("Usage: moduletree") || error.contains("try '--help'"),
            "{args:?}: {error}"
        );
    }
    let error = stderr_of_failure(&["inspect", "Llama"], 1);
    assert!(
        error.contains("no registered model type is named `Llama`; did you mean"),
        "{error}"
    );
}

#[test]
fn prints_a_checkpoint_as_json_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    let data = vec![0_u8; 4 * 16 * 16];
    let tensors: Vec<(String, TensorView<'_>)> = (0..4)
        .flat_map(|layer| {
            ["q_proj", "v_proj"].map(|proj| {
                (
                    format!("model.layers.{layer}.self_attn.{proj}.weight"),
                    TensorView::new(Dtype::F32, vec![16, 16], &data).unwrap(),
                )
            })
        })
        .collect();
    safetensors::serialize_to_file(tensors, None, &file).unwrap();
    let file = path(&file);

    let text = stdout(&moduletree(&["inspect", "--checkpoint", file]));
    assert!(
        text.starts_with(&format!("{file}: 8 tensors in 1 file(s)\n")),
        "{text}"
    );
    assert!(text.contains("\n    layers: 0..3 × Module\n"), "{text}");
    assert!(
        text.contains("\nlinear targets: q_proj, v_proj\n"),
        "{text}"
    );

    let value = json(&["inspect", "--checkpoint", file]);
    assert_eq!(value["title"], format!("{file}: 8 tensors in 1 file(s)"));
    assert_eq!(value["linear"], serde_json::json!(["q_proj", "v_proj"]));
    assert_eq!(
        value["notes"],
        serde_json::json!([format!(
            "no {}: the vocabulary size, expert count and tied embeddings are not confirmed",
            dir.path().join("config.json").display()
        )])
    );

    let bad = dir.path().join("bad.safetensors");
    fs::write(&bad, [0; 4]).unwrap();
    let error = stderr_of_failure(&["inspect", "--checkpoint", path(&bad)], 1);
    assert!(
        error.contains(&format!("{}: truncated: 4 bytes", bad.display())),
        "{error}"
    );
}

/// A name read from a file reaches the terminal as text: its control characters are escaped,
/// in the report on stdout and in an error on stderr alike.
#[test]
fn control_characters_in_names_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    let data = vec![0_u8; 4 * 4];
    let tensors = vec![(
        "model.\u{1b}[2Jlayers.0.q_proj.weight".to_owned(),
        TensorView::new(Dtype::F32, vec![2, 2], &data).unwrap(),
    )];
    safetensors::serialize_to_file(tensors, None, &file).unwrap();

    let text = stdout(&moduletree(&["inspect", "--checkpoint", path(&file)]));
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("\\u{1b}[2Jlayers"), "{text}");

    // DEL, a C1 control and a right-to-left override: escaped in text, and in JSON as JSON
    // escapes, so that the JSON still reads back to the same names.
    let odd_names = dir.path().join("odd_names.safetensors");
    let names = [
        "model.a\u{7f}b.weight",
        "model.c\u{9b}31md.weight",
        "model.e\u{202e}f.weight",
        "model.g\nlinear targets: fake.weight",
        "model.h\u{2028}i\u{200b}j.weight",
    ];
    let tensors: Vec<(String, TensorView<'_>)> = names
        .iter()
        .map(|name| {
            let view = TensorView::new(Dtype::F32, vec![2, 2], &data).unwrap();
            ((*name).to_owned(), view)
        })
        .collect();
    safetensors::serialize_to_file(tensors, None, &odd_names).unwrap();
    let text = stdout(&moduletree(&["inspect", "--checkpoint", path(&odd_names)]));
    for raw in ['\u{7f}', '\u{9b}', '\u{202e}', '\u{2028}', '\u{200b}'] {
        assert!(!text.contains(raw), "{text:?}");
    }
    assert!(text.contains("a\\u{7f}b"), "{text}");
    // A line break in a name is escaped too: it cannot fake a line of the report, nor of the
    // target report.
    assert!(!text.contains("\nlinear targets: fake"), "{text}");
    assert!(text.contains("g\\nlinear targets: fake"), "{text}");
    let text = stdout(&moduletree(&[
        "inspect",
        "--checkpoint",
        path(&odd_names),
        "--target",
        "all-linear",
    ]));
    assert!(!text.contains("\nlinear targets: fake"), "{text}");
    assert!(text.contains("g\\nlinear targets: fake"), "{text}");
    let value = json(&["inspect", "--checkpoint", path(&odd_names)]);
    let linear: Vec<&str> = value["linear"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        linear,
        [
            "a\u{7f}b",
            "c\u{9b}31md",
            "e\u{202e}f",
            "g\nlinear targets: fake",
            "h\u{2028}i\u{200b}j",
        ]
    );

    let odd = dir.path().join("odd\u{7}name.safetensors");
    fs::write(&odd, [0; 4]).unwrap();
    let error = stderr_of_failure(&["inspect", "--checkpoint", path(&odd)], 1);
    assert!(!error.contains('\u{7}'), "{error:?}");
    assert!(
        error.contains("odd\\u{7}name.safetensors: truncated"),
        "{error}"
    );
}

#[test]
fn an_index_alone_is_inspected_with_its_towers() {
    let index = fixtures().join("checkpoints/medgemma-27b-it");
    let text = stdout(&moduletree(&["inspect", "--checkpoint", path(&index)]));
    assert!(text.contains("the others absent"), "{text}");
    assert!(
        text.contains("\nnotes:\n  12 of 12 shards absent"),
        "{text}"
    );
    assert!(text.contains("\ntowers:\n"), "{text}");

    let spanning = stdout(&moduletree(&[
        "inspect",
        "--checkpoint",
        path(&index),
        "--target",
        "q_proj",
    ]));
    assert!(
        spanning.contains("warning: target `q_proj` selects layers in 2 towers: 62 in language_model, 27 in vision_tower"),
        "{spanning}"
    );
    let scoped = json(&[
        "inspect",
        "--checkpoint",
        path(&index),
        "--target",
        "q_proj",
        "--tower",
        "vision_tower",
    ]);
    assert_eq!(scoped["selected"].as_array().unwrap().len(), 27);
    let error = stderr_of_failure(
        &[
            "inspect",
            "--checkpoint",
            path(&index),
            "--target",
            "q_proj",
            "--tower",
            "audio",
        ],
        1,
    );
    assert!(
        error.contains("no tower `audio` in the checkpoint"),
        "{error}"
    );
    assert!(
        !scoped["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("towers"))
    );
    let by_kind = json(&[
        "inspect",
        "--checkpoint",
        path(&index),
        "--target",
        "q_proj",
        "--tower",
        "language",
    ]);
    assert_eq!(by_kind["selected"].as_array().unwrap().len(), 62);
    let error = stderr_of_failure(
        &[
            "inspect",
            "--checkpoint",
            path(&index),
            "--target",
            "embed_tokens",
            "--tower",
            "vision_tower",
        ],
        1,
    );
    assert!(
        error.contains("select no layer in the tower `vision_tower`"),
        "{error}"
    );
}

#[test]
fn an_adapter_alone_and_against_a_checkpoint_or_a_type() {
    let llama = fixtures().join("merge/llama");
    let adapter = llama.join("adapter");
    let text = stdout(&moduletree(&["inspect", "--adapter", path(&adapter)]));
    assert!(
        text.contains("7 adapted modules (1 embeddings), 2 saved parameters"),
        "{text}"
    );
    assert!(
        text.contains(
            "target_modules (inferred from the file): embed_tokens, down_proj, q_proj, v_proj\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("rank_pattern (inferred): down_proj: 2\n"),
        "{text}"
    );
    assert!(text.contains("problems: none\n"), "{text}");

    let against = json(&[
        "inspect",
        "--adapter",
        path(&adapter),
        "--checkpoint",
        path(&llama.join("base")),
    ]);
    assert_eq!(against["against"]["loads"], true);
    assert_eq!(against["against"]["layers"].as_array().unwrap().len(), 7);
    assert_eq!(
        against["against"]["layers"][1]["path"],
        "model.layers.0.mlp.down_proj"
    );
    assert_eq!(against["against"]["layers"][1]["rank"], 2);

    // The Mixtral adapter does not fit the Llama checkpoint: the loaders' own error, on stdout
    // with exit status 1.
    let mixtral = fixtures().join("merge/mixtral/adapter");
    let refused = moduletree(&[
        "inspect",
        "--adapter",
        path(&mixtral),
        "--checkpoint",
        path(&llama.join("base")),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(text.contains("loads: no: "), "{text}");

    let text = stdout(&moduletree(&[
        "inspect",
        "--adapter",
        path(&mixtral),
        "MixtralForCausalLM",
    ]));
    assert!(
        text.contains("  model.layers.<>.mlp.experts (fused bank: model.layers.<>.mlp.experts.gate_up_proj or model.layers.<>.mlp.experts.down_proj) × 2\n"),
        "{text}"
    );
    assert!(
        text.contains("every adapted module is a layer of MixtralForCausalLM"),
        "{text}"
    );
    let output = moduletree(&["inspect", "--adapter", path(&mixtral), "LlamaForCausalLM"]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("not layers of LlamaForCausalLM (4):"),
        "{text}"
    );

    // PEFT's `all-linear` names parameters bare (`gate_up_proj`) and the router by its weight.
    let all_linear = fixtures().join("merge/mixtral_all_linear");
    let text = stdout(&moduletree(&[
        "inspect",
        "--adapter",
        path(&all_linear.join("adapter")),
        "--checkpoint",
        path(&all_linear.join("base")),
    ]));
    assert!(text.contains("problems: none\n"), "{text}");
    assert!(text.contains("loads: yes, 14 layers adapted"), "{text}");
    assert!(text.contains("model.layers.0.mlp.gate  rank 2"), "{text}");
}

#[test]
fn a_broken_adapter_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "use_dora": true}"#,
    )
    .unwrap();
    let a = vec![0_u8; 4 * 4 * 8];
    let b = vec![0_u8; 4 * 8 * 2];
    let tensors = vec![
        (
            "base_model.model.layers.0.q_proj.lora_A.weight",
            TensorView::new(Dtype::F32, vec![4, 8], &a).unwrap(),
        ),
        (
            "base_model.model.layers.0.q_proj.lora_B.weight",
            TensorView::new(Dtype::F32, vec![8, 2], &b).unwrap(),
        ),
        (
            "base_model.model.layers.1.q_proj.lora_A.weight",
            TensorView::new(Dtype::F32, vec![4, 8], &a).unwrap(),
        ),
        ("junk", TensorView::new(Dtype::F32, vec![4, 8], &a).unwrap()),
    ];
    safetensors::serialize_to_file(tensors, None, &dir.path().join("adapter_model.safetensors"))
        .unwrap();
    let value = json(&["inspect", "--adapter", path(dir.path())]);
    let problems: Vec<&str> = value["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for expected in [
        "`use_dora` = true is refused",
        "tensor `junk` is neither a LoRA factor nor a saved parameter",
        "`layers.0.q_proj`: lora_A has 4 rows but lora_B has 2 columns",
        "`layers.1.q_proj` has lora_A but no lora_B",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected} not in {problems:?}"
        );
    }
}

#[test]
fn merges_an_adapter_with_a_report_per_shard() {
    let llama = fixtures().join("merge/llama");
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("merged");
    let text = stdout(&moduletree(&[
        "merge",
        "--checkpoint",
        path(&llama.join("base")),
        "--adapter",
        path(&llama.join("adapter")),
        "--out",
        path(&target),
        "--quiet",
    ]));
    assert!(text.starts_with("merged 7 layers into "), "{text}");
    assert!(target.join("model.safetensors.index.json").is_file());
    let error = stderr_of_failure(
        &[
            "merge",
            "--checkpoint",
            path(&llama.join("base")),
            "--adapter",
            path(&fixtures().join("merge/mixtral/adapter")),
            "--out",
            path(&out.path().join("other")),
        ],
        1,
    );
    assert!(error.starts_with("error: "), "{error}");
    assert!(!out.path().join("other").exists());
    let error = stderr_of_failure(
        &[
            "merge",
            "--checkpoint",
            "model.gguf",
            "--adapter",
            path(&llama.join("adapter")),
            "--out",
            path(&out.path().join("gguf")),
        ],
        1,
    );
    assert!(
        error.contains("a GGUF file: merge reads and writes safetensors"),
        "{error}"
    );
}

#[test]
fn plans_a_type() {
    let value: Value = serde_json::from_str(&stdout(&moduletree(&[
        "plan",
        "MixtralForCausalLM",
        "--tp",
        "2",
    ])))
    .unwrap();
    assert_eq!(value["_tp_plan"]["lm_head"], "colwise_gather_output");
    let error = stderr_of_failure(&["plan", "Mixtral"], 1);
    assert!(
        error.starts_with("error: no registered model type is named `Mixtral`"),
        "{error}"
    );
}

#[test]
fn reads_a_gguf_header_with_hugging_face_names() {
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
    use candle_core::{Device, Tensor};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.gguf");
    let weight = |rows: usize, cols: usize, dtype: GgmlDType| {
        let values = Tensor::zeros((rows, cols), candle_core::DType::F32, &Device::Cpu).unwrap();
        QTensor::quantize(&values, dtype).unwrap()
    };
    let tensors = [
        ("token_embd.weight", weight(32, 64, GgmlDType::F16)),
        ("blk.0.attn_q.weight", weight(64, 64, GgmlDType::Q8_0)),
        ("blk.0.attn_v.weight", weight(64, 64, GgmlDType::F32)),
        ("blk.1.attn_q.weight", weight(64, 64, GgmlDType::Q8_0)),
        ("blk.1.attn_v.weight", weight(64, 64, GgmlDType::F32)),
        ("output.weight", weight(32, 64, GgmlDType::F32)),
    ];
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut writer = fs::File::create(&file).unwrap();
    gguf_file::write(&mut writer, &[], &tensors).unwrap();
    drop(writer);

    let text = stdout(&moduletree(&["inspect", "--checkpoint", path(&file)]));
    assert!(text.contains("linear targets: q_proj, v_proj\n"), "{text}");
    assert!(
        text.contains("v_proj: Linear(weight: F32[64, 64]) [linear]"),
        "{text}"
    );
    assert!(
        text.contains("q_proj: Linear(weight: ?) [linear]"),
        "{text}"
    );
    assert!(
        text.contains("2 tensors are quantized in GGUF block formats (Q8_0)"),
        "{text}"
    );
    let value = json(&["inspect", "--checkpoint", path(&file)]);
    assert_eq!(value["embedding"], serde_json::json!(["embed_tokens"]));

    let bad = dir.path().join("bad.gguf");
    fs::write(&bad, b"GGUF but not really").unwrap();
    let error = stderr_of_failure(&["inspect", "--checkpoint", path(&bad)], 1);
    assert!(error.contains("not a readable GGUF file"), "{error}");

    // candle's reader divides by the declared alignment: 0 is reported, not a crash.
    let mut zero = Vec::new();
    zero.extend_from_slice(b"GGUF");
    zero.extend_from_slice(&3_u32.to_le_bytes());
    zero.extend_from_slice(&0_u64.to_le_bytes());
    zero.extend_from_slice(&1_u64.to_le_bytes());
    let key = b"general.alignment";
    zero.extend_from_slice(&(key.len() as u64).to_le_bytes());
    zero.extend_from_slice(key);
    zero.extend_from_slice(&4_u32.to_le_bytes());
    zero.extend_from_slice(&0_u32.to_le_bytes());
    let aligned = dir.path().join("align0.gguf");
    fs::write(&aligned, zero).unwrap();
    let error = stderr_of_failure(&["inspect", "--checkpoint", path(&aligned)], 1);
    assert!(error.contains("`general.alignment` is 0"), "{error}");
    assert!(!error.contains("panicked"), "{error}");

    // The alignment is found past other metadata (arrays of strings and numbers included).
    let tokens = gguf_file::Value::Array(vec![
        gguf_file::Value::String("<s>".to_owned()),
        gguf_file::Value::String("</s>".to_owned()),
    ]);
    let scores = gguf_file::Value::Array(vec![gguf_file::Value::F32(0.5); 3]);
    for (alignment, readable) in [(32_u32, true), (0, false)] {
        let alignment = gguf_file::Value::U32(alignment);
        let metadata = [
            ("tokenizer.ggml.tokens", &tokens),
            ("tokenizer.ggml.scores", &scores),
            ("general.alignment", &alignment),
        ];
        let file = dir.path().join("metadata.gguf");
        let mut writer = fs::File::create(&file).unwrap();
        gguf_file::write(&mut writer, &metadata, &tensors[..1]).unwrap();
        drop(writer);
        let output = moduletree(&["inspect", "--checkpoint", path(&file)]);
        assert_eq!(output.status.success(), readable, "{output:?}");
    }

    let empty = tempfile::tempdir().unwrap();
    let error = stderr_of_failure(&["inspect", "--checkpoint", path(empty.path())], 1);
    assert!(error.contains("holds neither"), "{error}");
}

/// A fused expert bank's bias is its companion, and two tensors of one name (in GGUF's names or
/// in Hugging Face's) are refused, never kept as one.
#[test]
fn gguf_expert_biases_and_duplicate_names() {
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
    use candle_core::{Device, Tensor};

    let dir = tempfile::tempdir().unwrap();
    let tensor = |shape: &[usize]| {
        let values = Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap();
        QTensor::quantize(&values, GgmlDType::F32).unwrap()
    };
    let write = |name: &str, tensors: &[(&str, &QTensor)]| {
        let file = dir.path().join(name);
        let mut writer = fs::File::create(&file).unwrap();
        gguf_file::write(&mut writer, &[], tensors).unwrap();
        file
    };
    let (bank, bias, router) = (tensor(&[4, 8, 16]), tensor(&[4, 8]), tensor(&[4, 16]));
    let moe = write(
        "moe.gguf",
        &[
            ("blk.0.ffn_down_exps.weight", &bank),
            ("blk.0.ffn_down_exps.bias", &bias),
            ("blk.0.ffn_gate_inp.weight", &router),
        ],
    );
    let text = stdout(&moduletree(&["inspect", "--checkpoint", path(&moe)]));
    assert!(
        text.contains(
            "down_proj: GroupedLinear(down_proj: F32[4, 8, 16], down_proj_bias: F32[4, 8]) [grouped_linear, expert]"
        ),
        "{text}"
    );
    assert!(text.contains("linear targets: down_proj\n"), "{text}");

    let square = tensor(&[4, 4]);
    for (file, names, message) in [
        (
            "twice.gguf",
            ["x.weight", "x.weight"],
            "the header lists 2 tensors under 1 distinct names",
        ),
        (
            "aliased.gguf",
            ["output.weight", "lm_head.weight"],
            "both name `lm_head.weight` in Hugging Face's names",
        ),
    ] {
        let file = write(file, &[(names[0], &square), (names[1], &square)]);
        let error = stderr_of_failure(&["inspect", "--checkpoint", path(&file)], 1);
        assert!(error.contains(message), "{error}");
    }
}
