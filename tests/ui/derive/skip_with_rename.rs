use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[tree(skip, rename = "rotary")]
    rotary_emb: Vec<f32>,
}

fn main() {}
