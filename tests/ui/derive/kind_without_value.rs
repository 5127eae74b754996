use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind)]
struct Linear {
    weight: Vec<f32>,
}

fn main() {}
