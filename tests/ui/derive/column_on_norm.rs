use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Block {
    #[layer(kind = "norm", parallel = "column")]
    norm: Vec<f32>,
}

fn main() {}
