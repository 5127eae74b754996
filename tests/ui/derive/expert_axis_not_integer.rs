use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "grouped_linear", expert_axis = "0")]
struct Experts {
    weight: Vec<f32>,
}

fn main() {}
