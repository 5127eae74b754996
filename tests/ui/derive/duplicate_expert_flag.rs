use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear {
    #[layer(expert_flag)]
    is_expert: bool,
    #[layer(expert_flag)]
    is_routed: bool,
}

fn main() {}
