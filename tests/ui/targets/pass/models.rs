use moduletree::ModuleTree;
use moduletree_tests::models::{DeepseekV3, Llama, Mixtral, Qwen2Moe, deepseek_v3, llama};

fn main() {
    let spec = moduletree::targets!(Llama: "q_proj", "layers.<>.mlp.down_proj", "^lm_head",);
    let resolution = spec.resolve(&llama(2)).unwrap();
    assert_eq!(resolution.layers().len(), 5);
    let _ = moduletree::targets!(Mixtral: "all-linear", "all-router", "experts.*.w1", "layers.3.**.w2");
    let _ = moduletree::targets!(Qwen2Moe: "shared_expert.gate_proj", "mlp.gate", "all-embedding");
    let spec = moduletree::targets!(DeepseekV3: "experts.gate_up_proj", "experts.<>.up_proj", "kv_a_proj_with_mqa");
    assert!(spec.resolve(&deepseek_v3(2, 1, 2, true)).is_err());
    assert!(spec.resolve(&moduletree_tests::models::DeepseekV3::SCHEMA).is_ok());
}
