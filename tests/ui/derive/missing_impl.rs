use moduletree::ModuleTree;

struct Rotary {
    inv_freq: Vec<f32>,
}

#[derive(ModuleTree)]
struct Attention {
    rotary_emb: Rotary,
}

fn main() {}
