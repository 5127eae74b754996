use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[tree(skip)]
    #[layer(kind = "linear")]
    proj: Vec<f32>,
}

fn main() {}
