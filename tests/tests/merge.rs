//! `moduletree::peft::merge::merge`: an adapter merged into a sharded checkpoint on disk equals
//! PEFT's `merge_and_unload` (fixtures made by `tests/fixtures/merge/make_merge.py`), every other
//! tensor keeps its bytes, untouched shards are copied as they are, and bad input is refused
//! before anything is written.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use moduletree::peft::merge::{MergeStep, merge};
use moduletree::peft::{PeftError, PerExpertNames};
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

/// The largest absolute difference between `got` and `want`, element by element.
fn worst_difference(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(got, want)| (got - want).abs())
        .fold(0.0_f32, f32::max)
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
        let worst = worst_difference(values, &expected[name].0);
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
fn transposed_expert_banks_merge_as_peft_merges_them() {
    // GPT-OSS keeps its banks `[E, in, out]`, and its `config.json` says so by its model type:
    // q_proj and both banks in 2 layers, `down_proj` square (intermediate = hidden), so that a
    // delta added untransposed would fit and be wrong.
    check_case("gpt_oss", 6);
}

#[test]
fn peft_all_linear_on_deepseek_v3_adapts_the_banks_not_the_same_named_linears() {
    // The 5 attention projections in 2 layers, and in the MoE layer the two banks and the
    // router (`target_parameters` `gate_up_proj`, `down_proj`, `gate.weight`); the dense first
    // MLP and the shared experts keep their weights, as PEFT's merge does.
    check_case("deepseek_v3_all_linear", 13);
}

#[test]
fn target_parameters_ignore_layers_to_transform_as_peft_does() {
    // q_proj and k_proj in layer 1 only (`layers_to_transform: [1]`), and `gate_up_proj` in both
    // layers: PEFT applies the filter to `target_modules` and not to `target_parameters`.
    check_case("qwen3_moe_layers", 4);
}

/// The same adapter into the model's per-expert checkpoint (`mlp.experts.K.gate_proj` /
/// `up_proj` / `down_proj`): the split adapter lists the layer-1 projections by path, since
/// `layers_to_transform` would now also filter the experts, and the result equals PEFT's merge
/// split the same way.
#[test]
fn target_parameters_with_layers_to_transform_merge_into_a_per_expert_checkpoint() {
    let root = fixture("qwen3_moe_layers");
    let names = PerExpertNames::GATE_UP_DOWN;
    let base = tempfile::tempdir().unwrap();
    split_files_as(
        &shards(&root.join("base")),
        &base.path().join("model.safetensors"),
        names,
        |_| {},
    );
    fs::copy(
        root.join("base/config.json"),
        base.path().join("config.json"),
    )
    .unwrap();
    let expected = tempfile::tempdir().unwrap();
    let expected = expected.path().join("merged.safetensors");
    split_files_as(&[root.join("merged.safetensors")], &expected, names, |_| {});

    let out = tempfile::tempdir().unwrap();
    let report = merge(base.path(), root.join("adapter"), out.path(), |_| {}).unwrap();
    // q_proj and k_proj of layer 1; gate_proj and up_proj of 4 experts in 2 layers.
    assert_eq!(report.layers.len(), 2 + 16, "{:?}", report.layers);
    let merged = tensors_of(&shards(out.path()));
    let expected = tensors_of(&[expected]);
    let unmerged = tensors_of(&[base.path().join("model.safetensors")]);
    let mut changed = Vec::new();
    for (name, (values, bytes)) in &merged {
        let worst = worst_difference(values, &expected[name].0);
        assert!(worst <= 1e-6, "{name} is off by {worst}");
        if *bytes != unmerged[name].1 {
            changed.push(name.as_str());
        }
    }
    assert_eq!(changed.len(), 18, "{changed:?}");
    assert!(changed.contains(&"model.layers.0.mlp.experts.3.up_proj.weight"));
    assert!(!changed.contains(&"model.layers.0.self_attn.q_proj.weight"));
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

/// Splits a fused-layout tensor into transformers 4's per-expert layout under `names`, as the
/// Hub keeps Mixtral (`PerExpertNames::MIXTRAL`): a bank `mlp.experts.gate_up_proj` `[E, 2I, H]`
/// becomes `block_sparse_moe.experts.K.w1` / `w3` (the two halves of each expert's rows),
/// `down_proj` becomes `w2`, and the rest of the block (the router) moves under the per-expert
/// block name, if it has one of its own.
fn split_tensor(
    name: &str,
    shape: &[usize],
    data: &[u8],
    names: PerExpertNames,
    out: &mut BTreeMap<String, (Vec<usize>, Vec<u8>)>,
) {
    let renamed = match names.block {
        Some(block) => name.replace(".mlp.", &format!(".{block}.")),
        None => name.to_owned(),
    };
    let Some(prefix) = renamed
        .strip_suffix("gate_up_proj")
        .or_else(|| renamed.strip_suffix("down_proj"))
        .filter(|prefix| prefix.ends_with(".experts."))
    else {
        out.insert(renamed, (shape.to_vec(), data.to_vec()));
        return;
    };
    let (experts, rows, cols) = (shape[0], shape[1], shape[2]);
    let per_expert = rows * cols * 4;
    for expert in 0..experts {
        let matrix = &data[expert * per_expert..(expert + 1) * per_expert];
        if name.ends_with("gate_up_proj") {
            let half = per_expert / 2;
            for (part, bytes) in [(names.gate, &matrix[..half]), (names.up, &matrix[half..])] {
                out.insert(
                    format!("{prefix}{expert}.{part}.weight"),
                    (vec![rows / 2, cols], bytes.to_vec()),
                );
            }
        } else {
            out.insert(
                format!("{prefix}{expert}.{}.weight", names.down),
                (vec![rows, cols], matrix.to_vec()),
            );
        }
    }
}

/// Every tensor of `files`, split by [`split_tensor`] under Mixtral's names, written as one `f32`
/// file at `to`.
fn split_files(files: &[PathBuf], to: &Path) {
    split_files_as(files, to, PerExpertNames::MIXTRAL, |_| {});
}

/// [`split_files`] under Mixtral's names, with `edit` applied to the split tensors before they
/// are written.
fn split_files_but(
    files: &[PathBuf],
    to: &Path,
    edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<u8>)>),
) {
    split_files_as(files, to, PerExpertNames::MIXTRAL, edit);
}

/// Every tensor of `files`, split by [`split_tensor`] under `names`, with `edit` applied to the
/// split tensors, written as one `f32` file at `to`.
fn split_files_as(
    files: &[PathBuf],
    to: &Path,
    names: PerExpertNames,
    edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<u8>)>),
) {
    let mut out: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for file in files {
        let bytes = fs::read(file).unwrap();
        let tensors = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in tensors.tensors() {
            split_tensor(&name, view.shape(), view.data(), names, &mut out);
        }
    }
    edit(&mut out);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = out
        .iter()
        .map(|(name, (shape, data))| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, to).unwrap();
}

/// A PEFT adapter trained on transformers 5's fused experts merges into the same model's
/// per-expert checkpoint (the Hub's Mixtral files): each expert's projections get their rows of
/// the bank's delta, the router its own, and the result equals PEFT's merge split the same way.
#[test]
fn a_fused_expert_adapter_merges_into_a_per_expert_checkpoint() {
    // (case, adapted weights: attention projections, routers, 2 layers × 4 experts × 3)
    for (case, layers) in [("mixtral", 2 + 24), ("mixtral_all_linear", 8 + 2 + 24)] {
        let root = fixture(case);
        let base = tempfile::tempdir().unwrap();
        split_files(
            &shards(&root.join("base")),
            &base.path().join("model.safetensors"),
        );
        fs::copy(
            root.join("base/config.json"),
            base.path().join("config.json"),
        )
        .unwrap();
        let expected = tempfile::tempdir().unwrap();
        let expected = expected.path().join("merged.safetensors");
        split_files(&[root.join("merged.safetensors")], &expected);

        let out = tempfile::tempdir().unwrap();
        let report = merge(base.path(), root.join("adapter"), out.path(), |_| {}).unwrap();
        assert_eq!(report.layers.len(), layers, "{case}: {:?}", report.layers);
        let merged = tensors_of(&shards(out.path()));
        let expected = tensors_of(&[expected]);
        let unmerged = tensors_of(&[base.path().join("model.safetensors")]);
        assert_eq!(
            merged.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{case}"
        );
        let mut changed = 0;
        for (name, (values, bytes)) in &merged {
            let worst = worst_difference(values, &expected[name].0);
            assert!(worst <= 1e-6, "{case}: {name} is off by {worst}");
            changed += usize::from(*bytes != unmerged[name].1);
        }
        assert_eq!(
            changed, layers,
            "{case}: exactly the adapted weights changed"
        );

        // Inspection says the same from the headers alone, naming the banks as transformers 5
        // fuses them.
        let checkpoint = moduletree::checkpoint::Checkpoint::open(base.path()).unwrap();
        let (adapted, unchecked) =
            moduletree::peft::inspect::check_against_checkpoint(root.join("adapter"), &checkpoint)
                .unwrap();
        assert_eq!(unchecked, 0);
        let paths: Vec<&str> = adapted.iter().map(|layer| layer.path.as_str()).collect();
        assert!(
            paths.contains(&"model.layers.1.mlp.experts.gate_up_proj")
                && paths.contains(&"model.layers.0.mlp.experts.down_proj"),
            "{case}: {paths:?}"
        );
    }
}

/// A per-expert checkpoint whose experts cannot be fused (one lacks a projection, or its shape
/// differs) is refused naming the expert, by `merge` and by inspection alike, before anything is
/// written.
#[test]
fn per_expert_checkpoints_that_cannot_be_fused_are_refused() {
    let root = fixture("mixtral");
    type Edit = fn(&mut BTreeMap<String, (Vec<usize>, Vec<u8>)>);
    let cases: [(Edit, &str); 2] = [
        (
            |tensors| {
                tensors.remove("model.layers.1.block_sparse_moe.experts.3.w2.weight");
            },
            "expert 3 of the 4 in `model.layers.1.block_sparse_moe` has no `w2`",
        ),
        (
            |tensors| {
                let (shape, _) = tensors
                    .get_mut("model.layers.0.block_sparse_moe.experts.2.w1.weight")
                    .unwrap();
                shape.swap(0, 1);
            },
            "expert 2's `w1` in `model.layers.0.block_sparse_moe` is",
        ),
    ];
    for (edit, message) in cases {
        let base = tempfile::tempdir().unwrap();
        split_files_but(
            &shards(&root.join("base")),
            &base.path().join("model.safetensors"),
            edit,
        );
        let out = tempfile::tempdir().unwrap();
        let error = merge(base.path(), root.join("adapter"), out.path(), |_| {})
            .unwrap_err()
            .to_string();
        assert!(error.contains(message), "{error}");
        assert!(fs::read_dir(out.path()).unwrap().next().is_none());
        let checkpoint = moduletree::checkpoint::Checkpoint::open(base.path()).unwrap();
        let error =
            moduletree::peft::inspect::check_against_checkpoint(root.join("adapter"), &checkpoint)
                .unwrap_err()
                .to_string();
        assert!(error.contains(message), "{error}");
    }
}

/// A fused-expert adapter merges into a per-expert checkpoint whose model also has linears named
/// like the experts' projections: Qwen2-MoE's shared expert and DeepSeek-V3's dense first MLP
/// (`gate_proj`, `up_proj`, `down_proj`). Only the routed experts' projections and the adapter's
/// other targets change; the shared expert and the dense MLP keep their bytes.
#[test]
fn a_fused_expert_adapter_leaves_same_named_linears_alone() {
    let moe = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/moe");
    // (model, the linears the adapter's `target_modules` name besides the experts)
    for (case, others) in [
        ("qwen2_moe", &["q_proj", "v_proj", "shared_expert_gate"][..]),
        (
            "deepseek_v3",
            &[
                "o_proj",
                "q_a_proj",
                "kv_b_proj",
                "kv_a_proj_with_mqa",
                "q_b_proj",
            ][..],
        ),
    ] {
        let model = moe.join(case).join("model");
        let out = tempfile::tempdir().unwrap();
        merge(&model, moe.join(case).join("fused"), out.path(), |_| {})
            .unwrap_or_else(|error| panic!("{case}: {error}"));
        let merged = tensors_of(&shards(out.path()));
        let base = tensors_of(&shards(&model));
        assert_eq!(
            merged.keys().collect::<Vec<_>>(),
            base.keys().collect::<Vec<_>>()
        );
        let changed: Vec<&str> = merged
            .iter()
            .filter(|(name, (_, bytes))| *bytes != base[*name].1)
            .map(|(name, _)| name.as_str())
            .collect();
        let expected = |name: &str| {
            let module = name.strip_suffix(".weight").unwrap_or(name);
            let last = module.rsplit('.').next().unwrap_or_default();
            let routed = module.contains(".mlp.experts.")
                && ["gate_proj", "up_proj", "down_proj"].contains(&last);
            name.ends_with(".weight") && (routed || others.contains(&last))
        };
        let missing: Vec<&String> = base
            .keys()
            .filter(|name| expected(name) && !changed.contains(&name.as_str()))
            .collect();
        let unexpected: Vec<&&str> = changed.iter().filter(|name| !expected(name)).collect();
        assert!(
            missing.is_empty() && unexpected.is_empty(),
            "{case}: unchanged {missing:?}, changed {unexpected:?}"
        );
        assert!(
            changed
                .iter()
                .any(|name| name.contains(".experts.3.down_proj")),
            "{case}: {changed:?}"
        );
    }
}

/// The `llama` base copied to a scratch directory, with `edit` applied to the tensors of the
/// shard that holds `model.layers.1.self_attn.q_proj.weight` (an adapted weight) before that
/// shard is written back.
fn llama_base_with(
    edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) -> tempfile::TempDir {
    let base = fixture("llama").join("base");
    let copy = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(&base).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
    }
    let target = "model.layers.1.self_attn.q_proj.weight";
    let shard = shards(copy.path())
        .into_iter()
        .find(|shard| {
            let bytes = fs::read(shard).unwrap();
            SafeTensors::deserialize(&bytes)
                .unwrap()
                .names()
                .contains(&target)
        })
        .unwrap();
    let bytes = fs::read(&shard).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        SafeTensors::deserialize(&bytes)
            .unwrap()
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                (
                    name,
                    view.dtype(),
                    view.shape().to_vec(),
                    view.data().to_vec(),
                )
            })
            .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &shard).unwrap();
    copy
}

/// An adapted weight whose dtype the merge cannot compute in is refused from the headers, naming
/// the tensor, before the output directory is made.
#[test]
fn an_adapted_weight_that_is_not_a_float_is_refused_before_anything_is_written() {
    let base = llama_base_with(|tensors| {
        for (name, dtype, _, _) in tensors.iter_mut() {
            if name == "model.layers.1.self_attn.q_proj.weight" {
                *dtype = safetensors::Dtype::I32;
            }
        }
    });
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("merged");
    let error = merge(
        base.path(),
        fixture("llama").join("adapter"),
        &target,
        |_| {},
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("`model.layers.1.self_attn.q_proj.weight` has dtype I32"),
        "{error}"
    );
    assert!(!target.exists(), "nothing is written");
    // Nor are the missing parents of a nested output made.
    let nested = out.path().join("a/b/merged");
    merge(
        base.path(),
        fixture("llama").join("adapter"),
        &nested,
        |_| {},
    )
    .unwrap_err();
    assert!(!out.path().join("a").exists());
}

/// An output that exists and is no directory (a device) is refused as such.
#[test]
fn an_output_that_is_not_a_directory_is_refused() {
    let root = fixture("llama");
    let error = merge(root.join("base"), root.join("adapter"), "/dev/null", |_| {}).unwrap_err();
    assert!(
        error.to_string().contains("it is not a directory"),
        "{error}"
    );
}

/// A merge that fails part of the way (here the second shard cannot be put in place: a
/// directory stands at its name) removes every file it wrote; the output directory it made is
/// removed too when nothing else is left in it.
#[test]
fn a_merge_that_fails_part_of_the_way_leaves_nothing_behind() {
    let root = fixture("llama");
    let names: Vec<String> = shards(&root.join("base"))
        .iter()
        .map(|shard| shard.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("merged");
    let blocker = target.join(&names[1]);
    let mut steps = 0;
    let error = merge(root.join("base"), root.join("adapter"), &target, |_| {
        steps += 1;
        if steps == 1 {
            fs::create_dir_all(blocker.join("in the way")).unwrap();
        }
    })
    .unwrap_err();
    assert_eq!(steps, 1, "the first shard was written: {error}");
    assert!(error.to_string().contains(&names[1]), "{error}");
    let left: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        [std::ffi::OsString::from(&names[1])],
        "only the blocker is left"
    );
}

/// One shard of a sharded checkpoint, given alone, is refused with what to give instead, rather
/// than merged as a model that lacks most of its tensors.
#[test]
fn one_shard_given_alone_is_refused() {
    let root = fixture("llama");
    let shard = shards(&root.join("base")).into_iter().next().unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("merged");
    let error = merge(&shard, root.join("adapter"), &target, |_| {}).unwrap_err();
    assert!(
        error.to_string().contains(
            "this is one shard of 3: give the checkpoint's directory, or its `model.safetensors.index.json`"
        ),
        "{error}"
    );
    assert!(!target.exists());
}

/// A Hugging Face cache snapshot holds symlinks into its blobs: the companions are followed and
/// copied. Weight files beside the shards (a stale `model.safetensors`, `pytorch_model.bin`) and
/// another index are never copied: a loader would take them over the merged shards.
#[test]
fn companions_are_followed_through_symlinks_and_other_weights_left_out() {
    let root = fixture("llama");
    let cache = tempfile::tempdir().unwrap();
    let (blobs, snapshot) = (cache.path().join("blobs"), cache.path().join("snapshot"));
    fs::create_dir_all(&blobs).unwrap();
    fs::create_dir_all(&snapshot).unwrap();
    for entry in fs::read_dir(root.join("base")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        fs::copy(&path, blobs.join(name)).unwrap();
        std::os::unix::fs::symlink(blobs.join(name), snapshot.join(name)).unwrap();
    }
    let stale = shards(&root.join("base")).into_iter().next().unwrap();
    fs::copy(&stale, snapshot.join("model.safetensors")).unwrap();
    fs::write(snapshot.join("pytorch_model.bin"), b"weights").unwrap();
    fs::write(snapshot.join("pytorch_model.bin.index.json"), b"{}").unwrap();
    fs::write(snapshot.join("tokenizer.json"), b"{}").unwrap();

    let out = tempfile::tempdir().unwrap();
    let index = snapshot.join("model.safetensors.index.json");
    merge(&index, root.join("adapter"), out.path(), |_| {}).unwrap();
    let mut written: Vec<String> = fs::read_dir(out.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut expected: Vec<String> = fs::read_dir(root.join("base"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .chain(["tokenizer.json".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(written, expected);
    assert_eq!(
        fs::read(out.path().join("config.json")).unwrap(),
        fs::read(root.join("base/config.json")).unwrap()
    );
}
