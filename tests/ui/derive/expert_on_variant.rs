use moduletree::ModuleTree;

#[derive(ModuleTree)]
enum Mlp {
    Dense(Vec<f32>),
    #[expert]
    Sparse(Vec<f32>),
}

fn main() {}
