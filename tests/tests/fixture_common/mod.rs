//! What several test files read from disk: the pinned snapshots under `tests/snapshots/` and the
//! fixture data under `fixtures/`.
#![allow(dead_code, reason = "each test file uses a part")]

use std::path::{Path, PathBuf};

/// Compares `actual` with the snapshot file `tests/snapshots/NAME`, or rewrites it when
/// `UPDATE_SNAPSHOTS=1`.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "snapshots", name]
        .iter()
        .collect();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|value| value == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}; run with UPDATE_SNAPSHOTS=1", path.display()));
    assert!(
        expected == actual,
        "{} differs; run with UPDATE_SNAPSHOTS=1 and read the diff\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// transformers' own parallel plans, per architecture (`fixtures/parallel`, made by its
/// `make_transformers_plans.py`).
pub fn transformers_plans() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/parallel/transformers_plans.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fresh empty directory under the system's temp dir, removed when dropped.
pub struct Scratch(tempfile::TempDir);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

/// A fresh empty directory named after `name`, removed when the returned guard is dropped.
pub fn scratch(name: &str) -> Scratch {
    Scratch(
        tempfile::Builder::new()
            .prefix(&format!("moduletree-test-{name}-"))
            .tempdir()
            .unwrap(),
    )
}
