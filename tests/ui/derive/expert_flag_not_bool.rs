use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear {
    weight: Vec<f32>,
    #[layer(expert_flag)]
    expert_id: u32,
}

fn main() {}
