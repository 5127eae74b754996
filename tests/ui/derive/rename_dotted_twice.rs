use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
struct Attention {
    q_proj: Linear,
}

// Two dotted renames: `a.b.q_proj` is already the path of `a.b`'s own `q_proj`.
#[derive(ModuleTree)]
struct Model {
    #[tree(rename = "a.b")]
    attention: Attention,
    #[tree(rename = "a.b.q_proj")]
    query: Linear,
}

fn main() {
    let _ = moduletree::named_modules(&Model {
        attention: Attention { q_proj: Linear },
        query: Linear,
    });
}
