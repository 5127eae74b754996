use moduletree::{Expertise, ModuleTree};

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear;

#[derive(ModuleTree)]
struct Mlp {
    up_proj: Linear,
    down_proj: Linear,
}

#[derive(ModuleTree)]
#[expert(shared)]
struct SharedMlp {
    up_proj: Linear,
}

#[derive(ModuleTree)]
struct Moe {
    #[expert]
    experts: Vec<Mlp>,
    #[expert(shared)]
    shared_expert: Mlp,
    also_shared: SharedMlp,
    dense: Mlp,
}

fn main() {
    let mlp = || Mlp {
        up_proj: Linear,
        down_proj: Linear,
    };
    let moe = Moe {
        experts: vec![mlp()],
        shared_expert: mlp(),
        also_shared: SharedMlp { up_proj: Linear },
        dense: mlp(),
    };
    let mut found = Vec::new();
    moduletree::walk(&moe, |node| {
        if node.is_layer() {
            found.push((node.path().to_string(), node.expertise()));
        }
    });
    assert_eq!(
        found,
        [
            ("experts.0.up_proj".to_owned(), Expertise::Routed),
            ("experts.0.down_proj".to_owned(), Expertise::Routed),
            ("shared_expert.up_proj".to_owned(), Expertise::Shared),
            ("shared_expert.down_proj".to_owned(), Expertise::Shared),
            ("also_shared.up_proj".to_owned(), Expertise::Shared),
            ("dense.up_proj".to_owned(), Expertise::None),
            ("dense.down_proj".to_owned(), Expertise::None),
        ]
    );
    // `targets!` reads shared experts from the schema too.
    let spec = moduletree::targets!(Moe: "all-shared-experts", "all-experts");
    assert_eq!(spec.entries().len(), 2);
}
