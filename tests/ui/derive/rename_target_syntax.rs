use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Model {
    #[tree(rename = "**")]
    all: Vec<f32>,
    #[tree(rename = "blocks.^first")]
    first: Vec<f32>,
    #[tree(rename = "self attn")]
    attention: Vec<f32>,
}

fn main() {}
