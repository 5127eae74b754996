use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[tree(register = "no")]
struct Block {
    mlp: Vec<f32>,
}

fn main() {}
