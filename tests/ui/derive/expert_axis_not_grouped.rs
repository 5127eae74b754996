use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear", expert_axis = 0)]
struct Proj {
    weight: Vec<f32>,
}

fn main() {}
