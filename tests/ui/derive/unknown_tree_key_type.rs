use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[tree(prefix = "model")]
struct Model {
    norm: Vec<f32>,
}

fn main() {}
