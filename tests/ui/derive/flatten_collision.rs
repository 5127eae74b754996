use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear {
    weight: Vec<f32>,
}

#[derive(ModuleTree)]
struct Attention {
    q_proj: Linear,
}

/// `attn.q_proj` flattened lands on the sibling `q_proj`.
#[derive(ModuleTree)]
struct Block {
    #[tree(flatten)]
    attn: Attention,
    q_proj: Linear,
}

fn main() {}
