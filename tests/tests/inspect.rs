//! `cargo run --example inspect`: the listing of registered model types, a type's tree and
//! targets, a checkpoint's, and a clear error for a bad checkpoint. Runs the example through
//! Cargo, as a user would.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use safetensors::Dtype;
use safetensors::tensor::TensorView;

fn inspect(args: &[&str]) -> Output {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args([
            "run",
            "--quiet",
            "-p",
            "moduletree-examples",
            "--example",
            "inspect",
            "--",
        ])
        .args(args)
        .output()
        .expect("cargo runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn lists_the_registered_model_types() {
    let text = stdout(&inspect(&[]));
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
            "DeepseekV3ForCausalLm",
            "LlamaForCausalLm",
            "MixtralForCausalLm"
        ],
        "{text}"
    );
    assert!(text.contains("blocks and layers: Attention, "), "{text}");
}

#[test]
fn prints_a_type_with_its_targets_and_experts() {
    let text = stdout(&inspect(&["MixtralForCausalLm"]));
    for line in [
        "  model.layers: <> × MixtralDecoderLayer\n",
        "      gate: Linear [router]\n",
        "      experts: <> × MixtralExpert [expert]\n",
        "        w1: Linear [linear, expert]\n",
        "  lm_head: Linear [linear, head]\n",
        "linear targets: q_proj, k_proj, v_proj, o_proj, w1, w2, w3\n",
        "embedding targets: embed_tokens\n",
        "router targets: gate\n",
        "expert layers: model.layers.<>.block_sparse_moe.experts.<>.w1, ",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}

#[test]
fn an_unknown_type_is_an_error() {
    let output = inspect(&["Llama"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no registered model type is named `Llama`; did you mean"),
        "{stderr}"
    );
}

#[test]
fn prints_a_checkpoint_as_json_and_text() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inspect");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("model.safetensors");
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
    let path = file.to_str().unwrap();

    let text = stdout(&inspect(&["--checkpoint", path]));
    assert!(
        text.starts_with(&format!("{path}: 8 tensors in 1 file(s)\n")),
        "{text}"
    );
    assert!(text.contains("\n    layers: 0..3 × Module\n"), "{text}");
    assert!(
        text.contains("\nlinear targets: q_proj, v_proj\n"),
        "{text}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&inspect(&["--json", "--checkpoint", path]))).unwrap();
    assert_eq!(json["title"], format!("{path}: 8 tensors in 1 file(s)"));
    assert_eq!(json["linear"], serde_json::json!(["q_proj", "v_proj"]));
    let layers = &json["tree"][0]["children"][0]["children"][0];
    assert_eq!(layers["label"], "layers");
    assert_eq!(layers["children"][0]["count"], 4);

    let bad = dir.join("bad.safetensors");
    fs::write(&bad, [0; 4]).unwrap();
    let output = inspect(&["--checkpoint", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}: truncated: 4 bytes", bad.display())),
        "{stderr}"
    );
}
