// The macro behind `targets!` takes the crate path first; called without it, it says so.
fn main() {
    let _spec = moduletree::__private::__targets!(Llama: "q_proj");
}
