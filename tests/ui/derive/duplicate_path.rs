use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[tree(rename = "self_attn")]
    attn: Vec<f32>,
    #[tree(rename = "self_attn")]
    attention: Vec<f32>,
}

fn main() {}
