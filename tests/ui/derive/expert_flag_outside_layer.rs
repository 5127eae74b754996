use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    weight: Vec<f32>,
    #[layer(expert_flag)]
    is_expert: bool,
}

fn main() {}
