use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Model {
    #[tree(skip, layers)]
    layers: Vec<f32>,
}

fn main() {}
