use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
#[layer(kind = "embedding")]
struct Linear {
    weight: Vec<f32>,
}

fn main() {}
