use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear", parallel = "vocab")]
struct Proj {
    weight: Vec<f32>,
}

fn main() {}
