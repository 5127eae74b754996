//! Compile errors of `targets!`, one rule per file under `ui_targets/` with its `.stderr`, and
//! invocations that must compile under `ui_targets/pass/`.
//!
//! Regenerate the snapshots with
//! `TRYBUILD=overwrite cargo test -p moduletree-tests --test ui_targets` and read the diff.

#[test]
fn ui_targets() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui_targets/*.rs");
    cases.pass("tests/ui_targets/pass/*.rs");
}
