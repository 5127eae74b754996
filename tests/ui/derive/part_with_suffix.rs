use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear", parallel = "packed_column", parts = [1u8, 1])]
struct GateUp {
    weight: Vec<f32>,
}

fn main() {}
