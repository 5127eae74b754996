//! Checkpoints for tests, written as headers over sparse data sections: a safetensors file from
//! `(name, dtype, shape)` triples, opened with an optional `config.json`, and a module by path.

#![allow(dead_code, reason = "each test file uses the helpers it needs")]

use std::fs::{self, File};
use std::io::Write as _;
use std::path::Path;

use moduletree::checkpoint::{Checkpoint, CheckpointModule, Dtype};

/// Writes a safetensors file holding these tensors; the data section is a hole.
pub fn write(path: &Path, tensors: &[(&str, Dtype, &[u64])]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape) in tensors {
        let end = offset + dtype.bitsize() as u64 * shape.iter().product::<u64>() / 8;
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": dtype.to_string(), "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut file = File::create(path).unwrap();
    file.write_all(&(header.len() as u64).to_le_bytes())
        .unwrap();
    file.write_all(header.as_bytes()).unwrap();
    file.set_len(8 + header.len() as u64 + offset).unwrap();
}

/// A checkpoint of these tensors in a fresh directory, with `config` as its `config.json`.
pub fn open(
    tensors: &[(&str, Dtype, &[u64])],
    config: Option<serde_json::Value>,
) -> (tempfile::TempDir, Checkpoint) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    write(&file, tensors);
    if let Some(config) = config {
        fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    }
    let checkpoint = Checkpoint::open(&file).unwrap();
    (dir, checkpoint)
}

/// The module at a dotted path.
pub fn at<'c>(checkpoint: &'c Checkpoint, path: &str) -> &'c CheckpointModule {
    path.split('.').fold(checkpoint.root(), |module, segment| {
        module.child(segment).unwrap_or_else(|| {
            panic!(
                "no `{segment}` on the way to `{path}`\n{}",
                checkpoint.tree()
            )
        })
    })
}

/// The names of the checkpoint's tensors, in its order.
pub fn tensor_names(checkpoint: &Checkpoint) -> Vec<&str> {
    checkpoint
        .tensors()
        .iter()
        .map(|tensor| tensor.name.as_str())
        .collect()
}
