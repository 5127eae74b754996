use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
struct Attention {
    q_proj: Linear,
}

// A dotted rename may sit beside a field of its first segment, at a path that field's type
// does not have: Hugging Face's `self_attn.rotary_emb` kept at the block's level.
#[derive(ModuleTree)]
struct Block {
    self_attn: Attention,
    #[tree(rename = "self_attn.rotary_emb")]
    rotary: Linear,
}

fn main() {
    let paths: Vec<String> = moduletree::named_modules(&Block {
        self_attn: Attention { q_proj: Linear },
        rotary: Linear,
    })
    .iter()
    .map(|node| node.path().to_owned())
    .collect();
    assert_eq!(paths, ["", "self_attn", "self_attn.q_proj", "self_attn.rotary_emb"]);
}
