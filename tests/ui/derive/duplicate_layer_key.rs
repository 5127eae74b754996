use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear", parallel = "column", parallel = "row")]
struct Linear {
    weight: Vec<f32>,
}

fn main() {}
