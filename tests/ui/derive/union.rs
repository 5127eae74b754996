use moduletree::ModuleTree;

#[derive(ModuleTree)]
union Weights {
    half: u16,
    full: u32,
}

fn main() {}
