use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "attention")]
struct Attention {
    weight: Vec<f32>,
}

fn main() {}
