use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Moe {
    #[expert]
    #[expert]
    experts: Vec<f32>,
}

fn main() {}
