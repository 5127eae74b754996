use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
struct Model {
    // Each layer sits at an index: a suggestion names the list with it, never a bare `<>`.
    projections: Vec<Linear>,
}

fn main() {
    let _spec = moduletree::targets!(Model: "projection");
}
