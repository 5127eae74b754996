//! The derive's compile errors, one rule per file under `ui/` with its `.stderr`, and the
//! attributes that must compile under `ui/pass/`.
//!
//! The snapshots are made with the pinned toolchain (`rust-toolchain.toml`); regenerate them with
//! `TRYBUILD=overwrite cargo test -p moduletree-tests --test ui` and read the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
