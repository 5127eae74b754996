use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Moe {
    #[expert = true]
    experts: Vec<f32>,
}

fn main() {}
