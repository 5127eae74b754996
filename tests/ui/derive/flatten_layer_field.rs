use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear {
    weight: Vec<f32>,
}

/// A layer flattened beside a sibling would sit at the parent's own path.
#[derive(ModuleTree)]
struct Block {
    #[tree(flatten)]
    proj: Linear,
    norm: Linear,
}

fn main() {}
