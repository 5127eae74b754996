use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[tree(flatten, layers)]
    blocks: Vec<f32>,
}

fn main() {}
