use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[tree(rename = "self_attn")]
    #[tree(rename = "attention")]
    attn: Vec<f32>,
}

fn main() {}
