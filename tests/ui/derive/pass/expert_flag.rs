//! `#[layer(expert_flag)]`: the `bool` field that `set_linear_is_expert` sets.

use moduletree::{ModuleTree, set_linear_is_expert};

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear {
    #[layer(expert_flag)]
    is_expert: bool,
}

#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Tuple(u32, #[layer(expert_flag)] bool);

#[derive(ModuleTree)]
struct Moe {
    shared: Linear,
    #[expert]
    experts: Vec<Linear>,
    #[expert]
    tuple: Tuple,
}

fn main() {
    let mut moe = Moe {
        shared: Linear { is_expert: false },
        experts: vec![Linear { is_expert: false }, Linear { is_expert: false }],
        tuple: Tuple(0, false),
    };
    assert_eq!(
        set_linear_is_expert(&mut moe),
        ["experts.0", "experts.1", "tuple"]
    );
    assert!(!moe.shared.is_expert);
    assert!(moe.experts.iter().all(|expert| expert.is_expert));
    assert!(moe.tuple.1);
}
