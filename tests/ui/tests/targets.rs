//! Compile errors of `targets!`, one rule per file under `targets/` with its `.stderr`, and
//! invocations that must compile under `targets/pass/`.
//!
//! Regenerate the snapshots with
//! `TRYBUILD=overwrite cargo test -p moduletree-ui-tests --test targets` and read the diff.

#[test]
fn targets() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("targets/*.rs");
    cases.pass("targets/pass/*.rs");
}
