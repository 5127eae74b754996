use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(router)]
struct Gate {
    weight: Vec<f32>,
}

fn main() {}
