use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear {
    #[tree(skip)]
    weight: Vec<f32>,
}

fn main() {}
