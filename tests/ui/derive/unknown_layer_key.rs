use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear", bias = true)]
struct Linear {
    weight: Vec<f32>,
}

fn main() {}
