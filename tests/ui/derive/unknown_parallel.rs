use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear", parallel = "colum")]
struct ColumnLinear {
    weight: Vec<f32>,
}

fn main() {}
