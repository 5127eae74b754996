use moduletree_tests::models::Llama;

fn main() {
    let _spec = moduletree::targets!(Llama: "q_proj", 5);
}
