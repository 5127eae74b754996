use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[tree(flatten)]
    #[layer(kind = "linear")]
    proj: Vec<f32>,
}

fn main() {}
