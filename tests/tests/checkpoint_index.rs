//! Checkpoints whose names or shards are hostile or inconsistent: names the tree cannot take,
//! huge indices and leading zeros, a tensor held by two shards, and bad indexes; each a clear
//! error naming the file and the entry, or the documented result, never a panic.

use std::fs::{self};
use std::path::PathBuf;

use moduletree::checkpoint::{Checkpoint, Dtype, Note};

mod checkpoint_common;
use checkpoint_common::{at, open, write};

const F32: Dtype = Dtype::F32;

/// A tensor to write: name, dtype, shape.
type Spec<'a> = (&'a str, Dtype, &'a [u64]);

/// Names the tree cannot take, huge indices, leading zeros: never a panic, each the documented
/// result.
#[test]
fn hostile_names_are_handled() {
    let deep = vec!["a"; 3000].join(".");
    let wide = format!("model.layers.{}.w.weight", usize::MAX);
    let tensors: Vec<(&str, Dtype, &[u64])> = vec![
        (deep.as_str(), F32, &[2]),
        ("a..b.weight", F32, &[2]),
        (wide.as_str(), F32, &[2, 2]),
        ("model.layers.norm.weight", F32, &[2]),
        ("model.layers.1.w.weight", F32, &[2, 2]),
        ("model.layers.01.w.weight", F32, &[2, 2]),
        (
            "model.layers.99999999999999999999999.w.weight",
            F32,
            &[2, 2],
        ),
    ];
    let (_dir, checkpoint) = open(&tensors, None);
    assert_eq!(checkpoint.tensors().len(), 7);
    let Some(Note::UnusableNames { tensors: left_out }) = checkpoint
        .notes()
        .iter()
        .find(|note| matches!(note, Note::UnusableNames { .. }))
    else {
        panic!("{:?}", checkpoint.notes());
    };
    assert_eq!(left_out, &["a..b.weight".to_owned(), deep]);
    // `01` is a name, so it is not `1`; a number past usize is a name too.
    let layers = at(&checkpoint, "model.layers");
    assert!(layers.child("01").is_some() && layers.child("1").is_some());
    let text = checkpoint.summary().to_string();
    assert!(text.contains(&format!("{}: Module", usize::MAX)), "{text}");
    assert!(text.contains("01: Module"), "{text}");
    assert!(text.contains("99999999999999999999999: Module"), "{text}");
    let _ = checkpoint.tree().to_json();
}

/// A directory of shards, and an index mapping tensors to them.
fn shard_dir(
    shards: &[(&str, &[Spec<'_>])],
    index: &[(&str, &str)],
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for (shard, tensors) in shards {
        write(&dir.path().join(shard), tensors);
    }
    let weight_map: serde_json::Map<String, serde_json::Value> = index
        .iter()
        .map(|(tensor, shard)| ((*tensor).to_owned(), (*shard).into()))
        .collect();
    let path = dir.path().join("model.safetensors.index.json");
    fs::write(
        &path,
        serde_json::json!({"weight_map": weight_map}).to_string(),
    )
    .unwrap();
    (dir, path)
}

#[test]
fn a_tensor_in_two_shards_keeps_the_indexed_one() {
    let (_dir, index) = shard_dir(
        &[
            (
                "a.safetensors",
                &[("x.weight", F32, &[2, 2]), ("y.weight", F32, &[2, 2])],
            ),
            ("b.safetensors", &[("x.weight", F32, &[4, 2])]),
        ],
        &[("x.weight", "b.safetensors"), ("y.weight", "a.safetensors")],
    );
    let checkpoint = Checkpoint::open(&index).unwrap();
    assert_eq!(checkpoint.tensors().len(), 2);
    assert_eq!(checkpoint.tensors()[0].shape(), Some(&[4, 2][..]));
    assert!(checkpoint.notes().contains(&Note::HeldTwice {
        tensor: "x.weight".to_owned(),
        kept: "b.safetensors".to_owned(),
        other: "a.safetensors".to_owned(),
    }));
}

#[test]
fn a_bad_index_is_refused_naming_the_entry() {
    for (json, text) in [
        (
            r#"{"weight_map": {"a.weight": 3}}"#,
            "`weight_map.a.weight` should be a shard file name: invalid type: integer `3`",
        ),
        (
            r#"{"weight_map": {"a.weight": "x", "a.weight": "y"}}"#,
            "tensor `a.weight` is listed twice in `weight_map`",
        ),
        (
            r#"{"weight_map": {"a.weight": "../x.safetensors"}}"#,
            "shard `../x.safetensors` is not a file name inside the index's directory",
        ),
        (
            r#"{"weight_map": {"a.weight": "/etc/x.safetensors"}}"#,
            "shard `/etc/x.safetensors` is not a file name inside the index's directory",
        ),
        (r#"{"weight_map": []}"#, "`weight_map` should be an object"),
        (r#"[]"#, "invalid JSON"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("model.safetensors.index.json");
        fs::write(&index, json).unwrap();
        let message = Checkpoint::open(&index).unwrap_err().to_string();
        assert!(
            message.starts_with(&index.display().to_string()),
            "{message}"
        );
        assert!(message.contains(text), "`{message}` does not say `{text}`");
    }
}
