use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear", custom = "lora")]
struct Linear {
    weight: Vec<f32>,
}

fn main() {}
