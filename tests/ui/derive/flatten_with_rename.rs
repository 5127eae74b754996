use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[tree(flatten, rename = "mlp")]
    inner: Vec<f32>,
}

fn main() {}
