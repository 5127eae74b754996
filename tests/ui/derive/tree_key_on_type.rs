use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[tree(skip)]
struct Block {
    mlp: Vec<f32>,
}

fn main() {}
