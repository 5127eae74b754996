use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(head)]
struct LmHead {
    weight: Vec<f32>,
}

fn main() {}
