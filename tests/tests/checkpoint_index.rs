//! Checkpoints whose names or shards are hostile or inconsistent: names the tree cannot take,
//! huge indices and leading zeros, a tensor held by two shards, and bad indexes; each a clear
//! error naming the file and the entry, or the documented result, never a panic.

use std::fs::{self};
use std::path::PathBuf;

use moduletree::checkpoint::{Checkpoint, Dtype, Note};

mod checkpoint_common;
use checkpoint_common::{at, open, tensor_names, write};

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

#[test]
fn an_index_that_is_not_utf8_is_refused_with_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    fs::write(&index, b"{\"weight_map\": {\"a.w\xffeight\": \"x\"}}").unwrap();
    let message = Checkpoint::open(&index).unwrap_err().to_string();
    assert!(
        message.starts_with(&index.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("not UTF-8: invalid byte at offset 20"),
        "{message}"
    );
}

/// Names with JSON escapes are read whole, like the others.
#[test]
fn escaped_names_in_an_index_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    fs::write(
        &index,
        r#"{"weight_map": {"model.q\u005fproj.weight": "a.safetensors", "model.k_proj.weight": "a\u002esafetensors"}}"#,
    )
    .unwrap();
    let checkpoint = Checkpoint::open(&index).unwrap();
    let names = tensor_names(&checkpoint);
    assert_eq!(names, ["model.k_proj.weight", "model.q_proj.weight"]);
    assert_eq!(checkpoint.shards().len(), 1);
    assert_eq!(checkpoint.shards()[0].name, "a.safetensors");
}

/// Headers are read by several threads; the error is still the first bad shard's in the
/// index's order, whichever thread met it first.
#[test]
fn the_first_bad_shard_in_index_order_is_the_error() {
    let good: &[Spec<'_>] = &[("w", F32, &[2])];
    let names: Vec<String> = (0..12)
        .map(|shard| format!("s{shard:02}.safetensors"))
        .collect();
    let tensors: Vec<String> = (0..12).map(|shard| format!("m.{shard}.weight")).collect();
    let shards: Vec<(&str, &[Spec<'_>])> = names.iter().map(|name| (name.as_str(), good)).collect();
    let index: Vec<(&str, &str)> = tensors
        .iter()
        .zip(&names)
        .map(|(tensor, shard)| (tensor.as_str(), shard.as_str()))
        .collect();
    for _ in 0..8 {
        let (dir, path) = shard_dir(&shards, &index);
        // Two shards whose header length runs past the file.
        for bad in [&names[3], &names[9]] {
            fs::write(dir.path().join(bad), 1_000_u64.to_le_bytes()).unwrap();
        }
        let message = Checkpoint::open(&path).unwrap_err().to_string();
        assert!(message.contains(names[3].as_str()), "{message}");
    }
}

/// The state of a fused expert bank (`zzz.absmax`, GGUF's `down_proj.bias` before mapping) stays
/// with its bank, and a companion whose bank name is already a submodule of `experts` does not
/// make a second sibling of that name.
#[test]
fn fused_expert_state_and_companions_make_one_module_per_path() {
    let (_dir, checkpoint) = open(
        &[
            ("m.experts.zzz", F32, &[4, 4, 8]),
            ("m.experts.zzz.absmax", F32, &[4]),
            ("m.experts.zzz.absmax.q", F32, &[4]),
            ("m.experts.gate_up_proj_bias", F32, &[4, 8]),
            ("m.experts.gate_up_proj.weight", F32, &[8, 4]),
            ("m.router.weight", F32, &[4, 4]),
        ],
        None,
    );
    let zzz = at(&checkpoint, "m.experts.zzz");
    assert_eq!(
        zzz.parameter_names().collect::<Vec<_>>(),
        ["zzz", "zzz.absmax", "zzz.absmax.q"]
    );
    let paths: Vec<String> = moduletree::named_modules(&checkpoint)
        .iter()
        .map(|module| module.path().to_owned())
        .collect();
    let mut distinct = paths.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), paths.len(), "{paths:?}");
    assert!(paths.contains(&"m.experts.gate_up_proj".to_owned()));
    assert!(paths.contains(&"m.experts.gate_up_proj_bias".to_owned()));
    assert!(
        !paths.iter().any(|path| path.contains("absmax")),
        "{paths:?}"
    );
}

/// A tensor the index maps to an absent shard, which a present shard holds, is kept from the
/// present shard with its layout; a directory where a shard should be is an error.
#[test]
fn a_present_copy_beats_an_absent_one_and_a_directory_is_no_shard() {
    let (dir, index) = shard_dir(
        &[(
            "b.safetensors",
            &[("x.weight", F32, &[2, 2]), ("y.weight", F32, &[2, 2])],
        )],
        &[
            ("x.weight", "absent.safetensors"),
            ("y.weight", "b.safetensors"),
        ],
    );
    let checkpoint = Checkpoint::open(&index).unwrap();
    assert_eq!(checkpoint.tensors().len(), 2);
    assert_eq!(checkpoint.tensors()[0].shape(), Some(&[2, 2][..]));
    assert!(
        !checkpoint
            .notes()
            .iter()
            .any(|note| matches!(note, Note::HeldTwice { .. })),
        "{:?}",
        checkpoint.notes()
    );
    assert!(checkpoint.notes().contains(&Note::NotInIndex {
        shard: "b.safetensors".to_owned(),
        tensors: vec!["x.weight".to_owned()],
    }));
    fs::create_dir(dir.path().join("absent.safetensors")).unwrap();
    let message = Checkpoint::open(&index).unwrap_err().to_string();
    assert!(
        message.contains("absent.safetensors") && message.contains("a directory"),
        "{message}"
    );
}

/// An index whose reported size is not its content (a device) is read no further than the limit.
#[cfg(unix)]
#[test]
fn an_endless_index_stops_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    std::os::unix::fs::symlink("/dev/zero", &index).unwrap();
    let message = Checkpoint::open(&index).unwrap_err().to_string();
    assert!(message.contains("more than the limit of"), "{message}");
}
