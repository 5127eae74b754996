//! Checkpoints read from their safetensors headers alone: the module tree and targets of a
//! generated HF-Llama-style file and of a sharded index, agreement with the typed model, and a
//! typed error naming the file for every kind of bad input.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use moduletree::checkpoint::Dtype;
use moduletree::checkpoint::{Checkpoint, CheckpointError, Note, read_header};
use moduletree::{find_all_embedding_modules, find_all_linear_modules};
use moduletree_tests::models::llama;
use safetensors::tensor::TensorView;

mod checkpoint_common;
use checkpoint_common::tensor_names;

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("checkpoint")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

const HIDDEN: usize = 16;
const VOCAB: usize = 32;

/// HuggingFace Llama tensor names and shapes for `layers` decoder layers.
fn llama_tensors(layers: usize) -> Vec<(String, Vec<usize>)> {
    let mut tensors = vec![
        ("model.embed_tokens.weight".to_owned(), vec![VOCAB, HIDDEN]),
        ("model.norm.weight".to_owned(), vec![HIDDEN]),
        ("lm_head.weight".to_owned(), vec![VOCAB, HIDDEN]),
    ];
    for layer in 0..layers {
        let prefix = format!("model.layers.{layer}");
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            tensors.push((
                format!("{prefix}.self_attn.{proj}.weight"),
                vec![HIDDEN, HIDDEN],
            ));
        }
        tensors.push((
            format!("{prefix}.mlp.gate_proj.weight"),
            vec![2 * HIDDEN, HIDDEN],
        ));
        tensors.push((
            format!("{prefix}.mlp.up_proj.weight"),
            vec![2 * HIDDEN, HIDDEN],
        ));
        tensors.push((
            format!("{prefix}.mlp.down_proj.weight"),
            vec![HIDDEN, 2 * HIDDEN],
        ));
        tensors.push((format!("{prefix}.input_layernorm.weight"), vec![HIDDEN]));
        tensors.push((
            format!("{prefix}.post_attention_layernorm.weight"),
            vec![HIDDEN],
        ));
    }
    tensors
}

/// Writes F32 tensors of these shapes with the `safetensors` crate.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>)]) {
    let buffers: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| vec![0_u8; 4 * shape.iter().product::<usize>()])
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&buffers)
        .map(|((name, shape), data)| {
            (
                name.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Writes a file by hand: the header length, the header, then `data_len` bytes (sparse).
fn write_raw(path: &Path, declared_len: u64, header: &str, data_len: u64) {
    let mut file = File::create(path).unwrap();
    file.write_all(&declared_len.to_le_bytes()).unwrap();
    file.write_all(header.as_bytes()).unwrap();
    file.set_len(8 + header.len() as u64 + data_len).unwrap();
}

fn write_header(path: &Path, header: &str, data_len: u64) {
    write_raw(path, header.len() as u64, header, data_len);
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[test]
fn a_llama_checkpoint_gives_its_tree_and_targets() {
    let dir = scratch("llama");
    let file = dir.join("model.safetensors");
    write_safetensors(&file, &llama_tensors(3));
    let checkpoint = Checkpoint::open(&file).unwrap();
    assert_eq!(checkpoint.tensors().len(), 3 + 3 * 9);
    assert_eq!(checkpoint.files(), std::slice::from_ref(&file));
    let summary = checkpoint.summary();
    // Children come in name order: `mlp` before `self_attn`.
    assert_eq!(
        summary.linear,
        [
            "down_proj",
            "gate_proj",
            "up_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "v_proj"
        ]
    );
    assert_eq!(summary.embedding, ["embed_tokens"]);
    assert!(summary.router.is_empty());
    assert!(summary.experts.is_empty());
    let expected = "\
Checkpoint
  lm_head: Linear(weight: F32[32, 16]) [linear, head]
  model: Module
    embed_tokens: Embedding(weight: F32[32, 16]) [embedding]
    layers: 0..2 × Module
      input_layernorm: Norm(weight: F32[16]) [norm]
      mlp: Module
        down_proj: Linear(weight: F32[16, 32]) [linear]
        gate_proj: Linear(weight: F32[32, 16]) [linear]
        up_proj: Linear(weight: F32[32, 16]) [linear]
      post_attention_layernorm: Norm(weight: F32[16]) [norm]
      self_attn: Module
        k_proj: Linear(weight: F32[16, 16]) [linear]
        o_proj: Linear(weight: F32[16, 16]) [linear]
        q_proj: Linear(weight: F32[16, 16]) [linear]
        v_proj: Linear(weight: F32[16, 16]) [linear]
    norm: Norm(weight: F32[16]) [norm]
";
    assert_eq!(checkpoint.tree().to_string(), expected);
}

#[test]
fn checkpoint_targets_agree_with_the_typed_model() {
    let dir = scratch("agree");
    let file = dir.join("model.safetensors");
    write_safetensors(&file, &llama_tensors(2));
    let checkpoint = Checkpoint::open(&file).unwrap();
    assert_eq!(
        sorted(find_all_linear_modules(&checkpoint)),
        sorted(find_all_linear_modules(&llama(2)))
    );
    assert_eq!(
        find_all_embedding_modules(&checkpoint),
        find_all_embedding_modules(&llama(2))
    );
}

#[test]
fn a_sharded_index_reads_every_shard() {
    let dir = scratch("sharded");
    let tensors = llama_tensors(4);
    let (first, second): (Vec<_>, Vec<_>) = tensors
        .iter()
        .cloned()
        .partition(|(name, _)| !name.contains(".layers.2.") && !name.contains(".layers.3."));
    let shards = [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ];
    let mut weight_map = serde_json::Map::new();
    for (shard, tensors) in &shards {
        write_safetensors(&dir.join(shard), tensors);
        for (name, _) in tensors {
            weight_map.insert(name.clone(), (*shard).into());
        }
    }
    let index = dir.join("model.safetensors.index.json");
    let json = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    fs::write(&index, json.to_string()).unwrap();

    let sharded = Checkpoint::open(&index).unwrap();
    assert_eq!(sharded.files().len(), 2);
    let single_file = dir.join("single.safetensors");
    write_safetensors(&single_file, &tensors);
    let single = Checkpoint::open(&single_file).unwrap();
    let names = |checkpoint: &Checkpoint| -> Vec<(String, Vec<u64>)> {
        checkpoint
            .tensors()
            .iter()
            .map(|tensor| (tensor.name.clone(), tensor.shape().unwrap().to_vec()))
            .collect()
    };
    assert_eq!(names(&sharded), names(&single));
    assert_eq!(sharded.tree().to_string(), single.tree().to_string());
    assert!(
        sharded
            .tree()
            .to_string()
            .contains("    layers: 0..3 × Module\n")
    );
    // A directory opens through its index.
    assert_eq!(names(&Checkpoint::open(&dir).unwrap()), names(&single));
}

#[test]
fn a_mixtral_checkpoint_finds_its_router_and_experts() {
    let dir = scratch("mixtral");
    let file = dir.join("model.safetensors");
    let mut tensors = vec![("model.embed_tokens.weight".to_owned(), vec![VOCAB, HIDDEN])];
    for layer in 0..2 {
        let moe = format!("model.layers.{layer}.block_sparse_moe");
        tensors.push((format!("{moe}.gate.weight"), vec![4, HIDDEN]));
        for expert in 0..4 {
            for w in ["w1", "w2", "w3"] {
                tensors.push((
                    format!("{moe}.experts.{expert}.{w}.weight"),
                    vec![HIDDEN, HIDDEN],
                ));
            }
        }
        tensors.push((
            format!("model.layers.{layer}.self_attn.q_proj.weight"),
            vec![HIDDEN, HIDDEN],
        ));
    }
    write_safetensors(&file, &tensors);
    let summary = Checkpoint::open(&file).unwrap().summary();
    assert_eq!(summary.router, ["gate"]);
    assert_eq!(summary.linear, ["w1", "w2", "w3", "q_proj"]);
    assert_eq!(
        summary.experts,
        [
            "model.layers.<>.block_sparse_moe.experts.<>.w1",
            "model.layers.<>.block_sparse_moe.experts.<>.w2",
            "model.layers.<>.block_sparse_moe.experts.<>.w3"
        ]
    );
    let text = summary.tree.to_string();
    assert!(
        text.contains("\n        gate: Router(weight: F32[4, 16]) [router]\n"),
        "{text}"
    );
    assert!(
        text.contains("\n        experts: 0..3 × Module [expert]\n"),
        "{text}"
    );
    assert!(
        text.contains("\n          w1: Linear(weight: F32[16, 16]) [linear, expert]\n"),
        "{text}"
    );
}

#[test]
fn a_huge_sparse_file_answers_from_its_header() {
    let dir = scratch("huge");
    let file = dir.join("huge.safetensors");
    // 64 GiB of data that is never read: a sparse file takes no disk space.
    let data_len: u64 = 64 << 30;
    let header = format!(
        r#"{{"model.embed_tokens.weight":{{"dtype":"F32","shape":[4,{}],"data_offsets":[0,{data_len}]}}}}"#,
        data_len / 16
    );
    write_header(&file, &header, data_len);
    let header = read_header(&file).unwrap();
    fs::remove_file(&file).unwrap();
    assert_eq!(header.data_len, data_len);
    assert_eq!(header.tensors[0].shape, [4, data_len / 16]);
}

/// Opens `path`, expecting an error whose message names `named` and contains `text`.
fn open_error(path: &Path, named: &Path, text: &str) -> CheckpointError {
    let error = Checkpoint::open(path).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&named.display().to_string()),
        "`{message}` does not name {}",
        named.display()
    );
    assert!(message.contains(text), "`{message}` does not say `{text}`");
    error
}

#[test]
fn a_truncated_file_is_refused() {
    let file = scratch("truncated").join("model.safetensors");
    fs::write(&file, [1, 2, 3, 4, 5]).unwrap();
    let error = open_error(&file, &file, "truncated: 5 bytes");
    assert!(matches!(error, CheckpointError::Truncated { len: 5, .. }));
}

#[test]
fn a_header_length_beyond_the_file_is_refused() {
    let file = scratch("beyond").join("model.safetensors");
    write_raw(&file, 1_000_000, "{}", 0);
    let error = open_error(
        &file,
        &file,
        "header length 1000000 runs past the end of the file",
    );
    assert!(matches!(
        error,
        CheckpointError::HeaderBeyondFile {
            header_len: 1_000_000,
            file_len: 10,
            ..
        }
    ));
}

#[test]
fn a_header_that_is_not_an_object_is_refused() {
    let dir = scratch("not_object");
    let file = dir.join("model.safetensors");
    write_header(&file, "[1, 2]", 0);
    let error = open_error(&file, &file, "header is not a JSON object but an array");
    assert!(matches!(
        error,
        CheckpointError::NotAnObject {
            found: "an array",
            ..
        }
    ));
    let broken = dir.join("broken.safetensors");
    write_header(&broken, r#"{"a": "#, 0);
    let error = open_error(&broken, &broken, "invalid JSON");
    assert!(matches!(error, CheckpointError::Json { .. }));
}

#[test]
fn overlapping_offsets_are_refused() {
    let file = scratch("overlap").join("model.safetensors");
    let header = r#"{"a.weight":{"dtype":"F32","shape":[16],"data_offsets":[0,64]},"b.weight":{"dtype":"F32","shape":[16],"data_offsets":[32,96]}}"#;
    write_header(&file, header, 96);
    let error = open_error(
        &file,
        &file,
        "tensors `a.weight` [0, 64] and `b.weight` [32, 96] overlap",
    );
    assert!(matches!(error, CheckpointError::OverlappingTensors { .. }));
}

#[test]
fn offsets_beyond_the_data_are_refused() {
    let file = scratch("exceed").join("model.safetensors");
    let header = r#"{"a.weight":{"dtype":"F32","shape":[16],"data_offsets":[0,64]}}"#;
    write_header(&file, header, 10);
    let error = open_error(
        &file,
        &file,
        "tensor `a.weight`: data_offsets [0, 64] exceed the data section of 10 bytes",
    );
    assert!(matches!(
        error,
        CheckpointError::OffsetsBeyondData {
            end: 64,
            data_len: 10,
            ..
        }
    ));
}

#[test]
fn offsets_that_do_not_match_dtype_and_shape_are_refused() {
    let dir = scratch("mismatch");
    let file = dir.join("model.safetensors");
    let header = r#"{"a.weight":{"dtype":"BF16","shape":[4,4],"data_offsets":[0,64]}}"#;
    write_header(&file, header, 64);
    let error = open_error(&file, &file, "hold 64 bytes, but BF16 [4, 4] needs 32");
    assert!(matches!(
        error,
        CheckpointError::SizeMismatch { expected: 32, .. }
    ));
    let unknown = dir.join("unknown.safetensors");
    let header = r#"{"a.weight":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#;
    write_header(&unknown, header, 16);
    let error = open_error(
        &unknown,
        &unknown,
        "tensor `a.weight`: unknown dtype `F128`",
    );
    assert!(matches!(error, CheckpointError::InvalidTensor { .. }));
}

/// An absent shard is not an error: its tensors come from the index, shapes unknown, with a note;
/// loading (which needs every shard) is refused by `require_complete`. (Before, opening failed.)
#[test]
fn a_missing_shard_leaves_its_tensors_unknown() {
    let dir = scratch("missing_shard");
    write_safetensors(
        &dir.join("model-00001-of-00002.safetensors"),
        &llama_tensors(0),
    );
    let index = dir.join("model.safetensors.index.json");
    let json = serde_json::json!({"weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.layers.0.mlp.up_proj.weight": "model-00002-of-00002.safetensors",
    }});
    fs::write(&index, json.to_string()).unwrap();
    let checkpoint = Checkpoint::open(&index).unwrap();
    assert_eq!(checkpoint.files().len(), 1);
    assert_eq!(checkpoint.shards().len(), 2);
    assert!(!checkpoint.shards()[1].present);
    // The shard's header holds the head and norm too: kept, with a note.
    assert_eq!(checkpoint.tensors().len(), 4);
    let up = &checkpoint.tensors()[2];
    assert_eq!(up.name, "model.layers.0.mlp.up_proj.weight");
    assert_eq!(up.shape(), None);
    assert!(matches!(
        &checkpoint.notes()[0],
        Note::ShardsAbsent { shards, of: 2, tensors: 1 } if shards == &["model-00002-of-00002.safetensors"]
    ));
    assert!(
        checkpoint.notes()[0]
            .to_string()
            .starts_with("1 of 2 shards absent (`model-00002-of-00002.safetensors`)")
    );
    assert!(
        checkpoint
            .tree()
            .to_string()
            .contains("up_proj: Linear(weight: ?) [linear]"),
        "{}",
        checkpoint.tree()
    );
    let error = checkpoint.require_complete().unwrap_err();
    assert!(matches!(error, CheckpointError::MissingShard { .. }));
    assert!(
        error
            .to_string()
            .contains("shard `model-00002-of-00002.safetensors` is missing")
    );
}

/// A tensor the index maps to a present shard that lacks it is left out with a note (before, an
/// error); one the shard holds that the index omits is kept with a note (before, dropped).
#[test]
fn index_and_headers_are_reconciled_both_ways() {
    let dir = scratch("not_in_shard");
    write_safetensors(
        &dir.join("model-00001-of-00001.safetensors"),
        &llama_tensors(0),
    );
    let index = dir.join("model.safetensors.index.json");
    let json = serde_json::json!({"weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00001.safetensors",
        "model.layers.0.mlp.up_proj.weight": "model-00001-of-00001.safetensors",
    }});
    fs::write(&index, json.to_string()).unwrap();
    let checkpoint = Checkpoint::open(&index).unwrap();
    let names = tensor_names(&checkpoint);
    assert_eq!(
        names,
        [
            "lm_head.weight",
            "model.embed_tokens.weight",
            "model.norm.weight"
        ]
    );
    let notes: Vec<String> = checkpoint.notes().iter().map(ToString::to_string).collect();
    assert!(notes.contains(&"the index maps 1 tensor(s) to `model-00001-of-00001.safetensors`, whose header lacks them: `model.layers.0.mlp.up_proj.weight`".to_owned()), "{notes:?}");
    assert!(notes.contains(&"`model-00001-of-00001.safetensors` holds 2 tensor(s) the index does not map to it; kept: `lm_head.weight`, `model.norm.weight`".to_owned()), "{notes:?}");
    let error = checkpoint.require_complete().unwrap_err();
    assert!(
        error.to_string().contains(
            "tensor `model.layers.0.mlp.up_proj.weight` is mapped to shard `model-00001-of-00001.safetensors`"
        ),
        "{error}"
    );
    assert!(matches!(error, CheckpointError::TensorNotInShard { .. }));
    fs::write(&index, r#"{"metadata": {}}"#).unwrap();
    let error = open_error(
        &index,
        &index,
        "not a safetensors index: missing `weight_map`",
    );
    assert!(matches!(error, CheckpointError::InvalidIndex { .. }));
}

#[test]
fn a_bad_shard_is_named() {
    let dir = scratch("bad_shard");
    let shard = dir.join("model-00001-of-00001.safetensors");
    fs::write(&shard, [0; 3]).unwrap();
    let index = dir.join("model.safetensors.index.json");
    let json = serde_json::json!({"weight_map": {"x.weight": "model-00001-of-00001.safetensors"}});
    fs::write(&index, json.to_string()).unwrap();
    let error = open_error(&index, &shard, "truncated: 3 bytes");
    assert!(matches!(error, CheckpointError::Truncated { .. }));
}

#[test]
fn metadata_and_mixed_dtypes_are_read() {
    let file = scratch("metadata").join("model.safetensors");
    let half = vec![0_u8; 2 * 8 * 4];
    let bytes = vec![0_u8; 3];
    let tensors = [
        (
            "a.weight",
            TensorView::new(Dtype::BF16, vec![8, 4], &half).unwrap(),
        ),
        (
            "b.mask",
            TensorView::new(Dtype::BOOL, vec![3], &bytes).unwrap(),
        ),
    ];
    let metadata = [("format".to_owned(), "pt".to_owned())]
        .into_iter()
        .collect();
    safetensors::serialize_to_file(tensors, Some(metadata), &file).unwrap();
    let header = read_header(&file).unwrap();
    assert_eq!(header.metadata["format"], "pt");
    assert_eq!(header.data_len, 64 + 3);
    let dtypes: Vec<(&str, Dtype, &[u64])> = header
        .tensors
        .iter()
        .map(|tensor| (tensor.name.as_str(), tensor.dtype, tensor.shape.as_slice()))
        .collect();
    assert_eq!(
        dtypes,
        [
            ("a.weight", Dtype::BF16, &[8, 4][..]),
            ("b.mask", Dtype::BOOL, &[3][..])
        ]
    );
}

#[test]
fn layers_are_ordered_by_index_not_by_text() {
    let dir = scratch("order");
    let file = dir.join("model.safetensors");
    let mut tensors = llama_tensors(12);
    // Layer 10 has a wider MLP, so it does not fold with the others.
    for (name, shape) in &mut tensors {
        if name.starts_with("model.layers.10.mlp.up_proj") {
            shape[0] = 3 * HIDDEN;
        }
    }
    write_safetensors(&file, &tensors);
    let text = Checkpoint::open(&file).unwrap().tree().to_string();
    let layers: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("      ") && !line.starts_with("       "))
        .collect();
    assert_eq!(
        layers,
        [
            "      0..9 × Module",
            "      10: Module",
            "      11: Module (same as 0..9)"
        ],
        "{text}"
    );
}

/// A device (or a pipe) given as a checkpoint is refused before it is opened: a pipe would wait
/// for a writer, a device read forever.
#[test]
fn a_device_is_not_read_as_a_checkpoint() {
    let error = read_header("/dev/zero").unwrap_err();
    assert!(error.to_string().contains("not a regular file"), "{error}");
}

/// A name holding a line break, read from a file, is quoted on one line in a target error: it
/// cannot add a line to the error.
#[test]
fn names_in_target_errors_stay_on_one_line() {
    let path = scratch("line_break").join("model.safetensors");
    write_safetensors(
        &path,
        &[("model.a\nerror: fake.weight".to_owned(), vec![2, 2])],
    );
    let checkpoint = Checkpoint::open(&path).unwrap();
    let error = moduletree::target::TargetSpec::parse(["model"])
        .unwrap()
        .resolve(&checkpoint)
        .unwrap_err()
        .to_string();
    assert!(error.contains("`a\\nerror: fake`"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
}
