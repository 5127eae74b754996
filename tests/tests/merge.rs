//! `moduletree::peft::merge::merge`: an adapter merged into a sharded checkpoint on disk equals
//! PEFT's `merge_and_unload` (fixtures made by `tests/fixtures/merge/make_merge.py`), every other
//! tensor keeps its bytes, untouched shards are copied as they are, and bad input is refused
//! before anything is written.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use moduletree::peft::PeftError;
use moduletree::peft::merge::{MergeStep, merge};
use safetensors::SafeTensors;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/merge")
        .join(case)
}

/// Every tensor of every `.safetensors` file in `dir`, as `f32` values with their raw bytes.
fn tensors_of(files: &[PathBuf]) -> BTreeMap<String, (Vec<f32>, Vec<u8>)> {
    let mut all = BTreeMap::new();
    for file in files {
        let bytes = fs::read(file).unwrap();
        let tensors = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in tensors.tensors() {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            all.insert(name, (values, view.data().to_vec()));
        }
    }
    all
}

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    files
}

fn check_case(case: &str, expected_layers: usize) {
    let root = fixture(case);
    let out = tempfile::tempdir().unwrap();
    let mut steps: Vec<MergeStep> = Vec::new();
    let report = merge(
        root.join("base"),
        root.join("adapter"),
        out.path(),
        |step| {
            steps.push(step.clone());
        },
    )
    .unwrap();
    assert_eq!(report.layers.len(), expected_layers, "{:?}", report.layers);
    assert_eq!(steps, report.shards);

    let base = tensors_of(&shards(&root.join("base")));
    let merged = tensors_of(&shards(out.path()));
    let expected = tensors_of(&[root.join("merged.safetensors")]);
    assert_eq!(
        merged.keys().collect::<Vec<_>>(),
        base.keys().collect::<Vec<_>>(),
        "the merged checkpoint holds the base's tensors"
    );
    let mut changed = 0;
    for (name, (values, bytes)) in &merged {
        let (want, _) = &expected[name];
        let worst = values
            .iter()
            .zip(want)
            .map(|(got, want)| (got - want).abs())
            .fold(0.0_f32, f32::max);
        assert!(
            worst <= 1e-6,
            "{name}: off by {worst} from PEFT's merge_and_unload"
        );
        if *bytes == base[name].1 {
            continue;
        }
        changed += 1;
    }
    assert!(changed > 0, "the merge changed some tensor");
    // A shard with no change is the base's own file, byte for byte; so is the index.
    for step in report.shards.iter().filter(|step| step.changed == 0) {
        let name = &step.shard;
        assert_eq!(
            fs::read(out.path().join(name)).unwrap(),
            fs::read(root.join("base").join(name)).unwrap(),
            "{name}"
        );
    }
    for companion in ["model.safetensors.index.json", "config.json"] {
        assert_eq!(
            fs::read(out.path().join(companion)).unwrap(),
            fs::read(root.join("base").join(companion)).unwrap(),
            "{companion}"
        );
    }
}

#[test]
fn a_dense_adapter_merges_as_peft_merges_it() {
    // q_proj, v_proj, down_proj (rank pattern) in 2 layers, the embedding, and lm_head saved whole.
    check_case("llama", 7);
}

#[test]
fn a_fused_expert_adapter_merges_as_peft_merges_it() {
    // q_proj and both fused banks (`target_parameters`, rsLoRA) in 2 layers.
    check_case("mixtral", 6);
}

#[test]
fn peft_all_linear_on_a_fused_mixtral_merges_as_peft_merges_it() {
    // PEFT's `all-linear`: q/k/v/o, and `target_parameters` with bare names for both banks and
    // the router's own `gate.weight`, with PEFT's regex rank and alpha patterns.
    check_case("mixtral_all_linear", 14);
}

#[test]
fn a_bad_adapter_is_refused_before_anything_is_written() {
    let root = fixture("llama");
    let adapter = tempfile::tempdir().unwrap();
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        fs::copy(root.join("adapter").join(file), adapter.path().join(file)).unwrap();
    }
    // The config now selects a module the checkpoint lacks.
    let config = fs::read_to_string(adapter.path().join("adapter_config.json")).unwrap();
    fs::write(
        adapter.path().join("adapter_config.json"),
        config.replace("\"q_proj\"", "\"qq_proj\""),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("merged");
    let error = merge(root.join("base"), adapter.path(), &target, |_| {}).unwrap_err();
    assert!(!target.exists(), "nothing is written: {error}");
    assert!(error.to_string().contains("qq_proj"), "{error}");
}

#[test]
fn the_input_is_never_overwritten_nor_an_output_mixed() {
    let root = fixture("llama");
    let merge_into = |out: &Path| merge(root.join("base"), root.join("adapter"), out, |_| {});
    let error = merge_into(&root.join("base")).unwrap_err();
    assert!(matches!(error, PeftError::Output { .. }), "{error}");
    assert!(
        error.to_string().contains("the checkpoint's own directory"),
        "{error}"
    );

    let scratch = tempfile::tempdir().unwrap();
    fs::write(scratch.path().join("model.safetensors"), b"stale").unwrap();
    let error = merge_into(scratch.path()).unwrap_err();
    assert!(error.to_string().contains("it is not empty"), "{error}");
    assert_eq!(
        fs::read(scratch.path().join("model.safetensors")).unwrap(),
        b"stale"
    );

    let file = scratch.path().join("model.safetensors");
    let error = merge_into(&file).unwrap_err();
    assert!(
        error.to_string().contains("it is a file, not a directory"),
        "{error}"
    );
}

#[test]
fn a_missing_shard_is_named() {
    let root = fixture("llama");
    let base = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(root.join("base")).unwrap() {
        let path = entry.unwrap().path();
        if !path.ends_with("model-00002-of-00003.safetensors") {
            fs::copy(&path, base.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let out = tempfile::tempdir().unwrap();
    let error = merge(
        base.path(),
        root.join("adapter"),
        out.path().join("m"),
        |_| {},
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("model-00002-of-00003.safetensors"),
        "{error}"
    );
}
