use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
struct Block {
    q_proj: Linear,
}

// The layer list may sit in an enum's variant: its indices are still the layer indices.
#[derive(ModuleTree)]
enum Stack {
    Dense(Vec<Block>),
    Empty,
}

#[derive(ModuleTree)]
struct Model {
    #[tree(layers)]
    layers: Stack,
}

fn main() {
    let model = Model {
        layers: Stack::Dense(vec![Block { q_proj: Linear }, Block { q_proj: Linear }]),
    };
    let mut indices = Vec::new();
    moduletree::walk(&model, |node| {
        if node.is_layer() {
            indices.push(node.layer_index());
        }
    });
    assert_eq!(indices, [Some(0), Some(1)]);
    let _ = Stack::Empty;
}
