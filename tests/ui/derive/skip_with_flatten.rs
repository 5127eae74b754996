use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[tree(skip, flatten)]
    cache: Vec<f32>,
}

fn main() {}
