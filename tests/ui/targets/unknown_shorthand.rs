use moduletree_tests::models::Llama;

fn main() {
    let _spec = moduletree::targets!(Llama: "all-lineer");
}
