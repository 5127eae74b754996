use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear", expert_flag)]
struct Linear {
    weight: Vec<f32>,
    is_expert: bool,
}

fn main() {}
