use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
struct Model {
    #[layer(head, router)]
    gate: Linear,
}

fn main() {}
