//! Property test: the module tree a checkpoint's names make, against a naive construction.
//!
//! The builder splits only the part of each name that the previous (sorted) name does not share,
//! keeping the modules of the shared part open; splitting every name whole and collecting every
//! proper prefix must give the same modules, each owning the same parameters.

use std::collections::{BTreeMap, BTreeSet};

use moduletree::checkpoint::{Checkpoint, CheckpointTensor};
use moduletree::named_modules;
use proptest::prelude::*;

mod checkpoint_common;
use checkpoint_common::at;

/// Module segments: short names and indices that share prefixes (`1`, `10`; `a`, `ab`).
const SEGMENTS: [&str; 6] = ["a", "ab", "b", "0", "1", "10"];
/// Parameter names, disjoint from the segments so that no tensor folds into a parameter's state.
const PARAMETERS: [&str; 2] = ["weight", "bias"];

fn name() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(&SEGMENTS[..]), 0..5),
        prop::sample::select(&PARAMETERS[..]),
    )
        .prop_map(|(modules, parameter)| {
            let mut segments = modules;
            segments.push(parameter);
            segments.join(".")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_tree_is_every_proper_prefix_of_the_names(
        names in prop::collection::btree_set(name(), 1..40)
    ) {
        let tensors: Vec<CheckpointTensor> = names
            .iter()
            .map(|name| CheckpointTensor { name: name.clone(), shard: None, layout: None })
            .collect();
        let checkpoint = Checkpoint::from_parts(Vec::new(), tensors, None);
        let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for name in &names {
            let segments: Vec<&str> = name.split('.').collect();
            for depth in 1..segments.len() {
                expected.entry(segments[..depth].join(".")).or_default();
            }
            let (parameter, module) = segments.split_last().unwrap();
            if !module.is_empty() {
                expected
                    .entry(module.join("."))
                    .or_default()
                    .insert((*parameter).to_owned());
            }
        }
        let found: BTreeSet<String> = named_modules(&checkpoint)
            .iter()
            .map(|module| module.path().to_owned())
            .filter(|path| !path.is_empty())
            .collect();
        let wanted: BTreeSet<String> = expected.keys().cloned().collect();
        prop_assert_eq!(&found, &wanted);
        for (path, parameters) in &expected {
            let owned: BTreeSet<String> = at(&checkpoint, path)
                .parameter_names()
                .map(str::to_owned)
                .collect();
            prop_assert_eq!(&owned, parameters, "parameters of `{}`", path);
        }
        let top: BTreeSet<String> = names
            .iter()
            .filter(|name| !name.contains('.'))
            .cloned()
            .collect();
        let root: BTreeSet<String> =
            checkpoint.root().parameter_names().map(str::to_owned).collect();
        prop_assert_eq!(root, top);
    }
}
