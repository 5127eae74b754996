//! A program that names one item of a library crate sees every type that crate registers: the
//! linker keeps the whole crate, so `inventory` finds all its entries. (A program that names
//! nothing from the crate sees none of them; the registry docs say so.)

use moduletree::registry;

#[test]
fn one_used_item_links_every_registration_of_the_crate() {
    // The only reference to `moduletree_tests` in this test binary.
    let _ = moduletree_tests::models::Linear::new(1, 1);
    let names: Vec<&str> = registry::types()
        .iter()
        .filter(|registration| registration.module_path == "moduletree_tests::models")
        .map(|registration| registration.name)
        .collect();
    // Types from the start, the middle and the end of `models.rs`.
    for name in [
        "Linear",
        "LlamaDecoderLayer",
        "MixtralSparseMoe",
        "Qwen2MoeMlp",
        "DeepseekFusedMoe",
        "DeepseekDecoderLayer",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
}
