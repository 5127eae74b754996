use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[tree(flaten)]
    mlp: Vec<f32>,
}

fn main() {}
