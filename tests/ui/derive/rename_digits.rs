use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Model {
    #[tree(rename = "layers.0")]
    first_layer: Vec<f32>,
}

fn main() {}
