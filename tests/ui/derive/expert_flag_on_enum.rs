use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
enum Linear {
    Dense {
        weight: Vec<f32>,
        #[layer(expert_flag)]
        is_expert: bool,
    },
}

fn main() {}
