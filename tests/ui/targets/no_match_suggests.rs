use moduletree_tests::models::Llama;

fn main() {
    // Each bad entry is reported at its own span, with the nearest valid targets.
    let _spec = moduletree::targets!(Llama: "q_proj", "q_prj", "mlp.gate_prj", "k_proj");
}
