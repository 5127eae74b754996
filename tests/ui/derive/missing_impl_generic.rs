use moduletree::ModuleTree;

struct Rotary {
    inv_freq: Vec<f32>,
}

#[derive(ModuleTree)]
struct Block<T> {
    mlp: Vec<T>,
}

fn walkable<T: ModuleTree>(_: &T) {}

fn main() {
    let block = Block {
        mlp: vec![Rotary { inv_freq: vec![] }],
    };
    walkable(&block);
}
