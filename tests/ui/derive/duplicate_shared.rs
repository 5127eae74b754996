use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Moe {
    #[expert(shared, shared)]
    shared_experts: Vec<f32>,
}

fn main() {}
