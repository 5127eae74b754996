use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(custom = "embedding")]
struct Embedding {
    weight: Vec<f32>,
}

fn main() {}
