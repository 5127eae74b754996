use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear", head = true)]
struct LmHead {
    weight: Vec<f32>,
}

fn main() {}
