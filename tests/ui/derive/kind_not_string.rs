use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = linear)]
struct Linear {
    weight: Vec<f32>,
}

fn main() {}
