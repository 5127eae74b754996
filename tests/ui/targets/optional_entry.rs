use moduletree_tests::models::Mixtral;

fn main() {
    let _spec = moduletree::targets!(Mixtral: "?v_proj");
}
