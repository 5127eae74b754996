use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Moe {
    #[expert(routed)]
    experts: Vec<f32>,
}

fn main() {}
