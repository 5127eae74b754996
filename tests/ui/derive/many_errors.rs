use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear {
    weight: Vec<f32>,
}

#[derive(ModuleTree)]
struct Block {
    #[layer(kind = "lienar")]
    q_proj: Linear,
    #[tree(skip, rename = "k")]
    k_proj: Linear,
    #[tree(rename = "layers.<>")]
    v_proj: Linear,
    #[expert(true)]
    o_proj: Linear,
}

fn count_layers<T: ModuleTree>(model: &T) -> usize {
    moduletree::named_modules(model).len()
}

fn main() {
    let block = Block {
        q_proj: Linear { weight: vec![] },
        k_proj: Linear { weight: vec![] },
        v_proj: Linear { weight: vec![] },
        o_proj: Linear { weight: vec![] },
    };
    count_layers(&block);
    count_layers(&vec![block]);
}
