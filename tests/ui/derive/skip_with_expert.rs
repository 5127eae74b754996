use moduletree::ModuleTree;

#[derive(ModuleTree)]
struct Moe {
    #[tree(skip)]
    #[expert]
    experts: Vec<f32>,
}

fn main() {}
