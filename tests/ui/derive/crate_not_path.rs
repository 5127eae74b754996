use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[tree(crate = 1)]
struct Block {
    mlp: Vec<f32>,
}

fn main() {}
