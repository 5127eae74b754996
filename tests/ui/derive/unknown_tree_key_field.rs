use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[tree(flatten)]
    mlp: Vec<f32>,
}

fn main() {}
