use moduletree::ModuleTree;

mod layers {
    #[derive(moduletree::ModuleTree)]
    #[layer(kind = "linear")]
    pub struct Linear;
}

#[derive(ModuleTree)]
struct Attention<T> {
    q_proj: T,
}

// The type is named as written, `Attention<layers::Linear>`, in the error.
fn main() {
    let _ = moduletree::targets!(Attention<layers::Linear>: "q_prj");
}
