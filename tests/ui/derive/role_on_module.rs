use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear {
    weight: Vec<f32>,
}

#[derive(ModuleTree)]
struct Head {
    proj: Linear,
    norm: Linear,
}

#[derive(ModuleTree)]
struct Model {
    #[layer(head)]
    head: Head,
}

fn main() {}
