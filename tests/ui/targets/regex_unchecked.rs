use moduletree_tests::models::Mixtral;

fn main() {
    let _spec = moduletree::targets!(Mixtral: r"re:.*\.experts\.1\.w1");
}
