use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[tree(rename = "")]
    mlp: Vec<f32>,
}

fn main() {}
