use moduletree::ModuleTree;

#[derive(ModuleTree)]
enum Proj {
    #[layer(kind = "linear")]
    Dense(Vec<f32>),
    Identity,
}

fn main() {}
