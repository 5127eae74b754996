//! Compile-error tests of `#[derive(ModuleTree)]` (`derive/`) and `targets!` (`targets/`), run by
//! trybuild from `tests/`. This library is empty.
