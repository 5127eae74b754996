use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "grouped_linear", expert_axis = 3)]
struct Experts {
    weight: Vec<f32>,
}

fn main() {}
