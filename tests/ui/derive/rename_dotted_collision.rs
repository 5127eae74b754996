use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
struct Attention {
    rotary_emb: Linear,
}

// `self_attn.rotary_emb` is already the path of `self_attn`'s own `rotary_emb`.
#[derive(ModuleTree)]
struct Block {
    self_attn: Attention,
    #[tree(rename = "self_attn.rotary_emb")]
    rotary: Linear,
}

fn main() {
    let _ = moduletree::named_modules(&Block {
        self_attn: Attention { rotary_emb: Linear },
        rotary: Linear,
    });
}
