use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Model {
    #[tree(rename = "layers.<>")]
    layers: Vec<f32>,
}

fn main() {}
