use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
struct Decoder {
    q_proj: Linear,
}

#[derive(ModuleTree)]
struct Model {
    #[tree(layers)]
    decoder: Decoder,
}

fn main() {
    let _ = moduletree::named_modules(&Model {
        decoder: Decoder { q_proj: Linear },
    });
}
