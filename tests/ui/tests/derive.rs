//! The derive's compile errors, one rule per file under `derive/` with its `.stderr`, and
//! the attributes that must compile under `derive/pass/`.
//!
//! The snapshots are made with the pinned toolchain (`rust-toolchain.toml`); regenerate them with
//! `TRYBUILD=overwrite cargo test -p moduletree-ui-tests --test derive` and read the diff.

#[test]
fn derive() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("derive/*.rs");
    cases.pass("derive/pass/*.rs");
}
