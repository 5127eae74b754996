use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
struct Pair(Linear, Linear);

fn main() {
    // A tuple struct has exactly the indices 0 and 1.
    let _spec = moduletree::targets!(Pair: "0", "2");
}
