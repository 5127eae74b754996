use moduletree::ModuleTree;

#[derive(ModuleTree)]
#[tree(bound = "T ModuleTree")]
struct Block<T> {
    mlp: T,
}

fn main() {}
