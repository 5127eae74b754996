use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "lienar")]
struct Linear {
    weight: Vec<f32>,
}

fn main() {}
