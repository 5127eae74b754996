use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear", parallel = "packed_column", parts = [1, 5000000000])]
struct GateUp {
    weight: Vec<f32>,
}

fn main() {}
