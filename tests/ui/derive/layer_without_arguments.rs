use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer]
struct Linear {
    weight: Vec<f32>,
}

fn main() {}
