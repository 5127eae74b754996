use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(custom = "")]
struct Rotary {
    inv_freq: Vec<f32>,
}

fn main() {}
