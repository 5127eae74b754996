use moduletree::ModuleTree;

#[derive(ModuleTree)]
enum Mlp {
    #[tree(rename = "dense")]
    Dense(Vec<f32>),
    Identity,
}

fn main() {}
