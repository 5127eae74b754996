use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[layer(kind = "linear", router)]
    gate: Vec<f32>,
}

fn main() {}
