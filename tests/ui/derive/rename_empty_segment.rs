use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Model {
    #[tree(rename = "model..layers")]
    layers: Vec<f32>,
}

fn main() {}
