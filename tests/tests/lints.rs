//! The expansion is warning-free: the derive on a representative set of types, under the
//! strictest lints a user may set. Run under clippy as well as rustc
//! (`cargo clippy -p moduletree-tests --all-targets -- -D warnings`).

#![deny(warnings, unused_qualifications, clippy::pedantic)]
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;

use moduletree::ModuleTree;

/// A leaf layer that holds the run-time expert flag.
#[derive(ModuleTree, Debug, Default)]
#[layer(kind = "linear", parallel = "column")]
pub struct Linear {
    pub weight: Vec<f32>,
    #[layer(expert_flag)]
    pub is_expert: bool,
}

/// A leaf layer of a custom kind, as a tuple struct.
#[derive(ModuleTree, Debug, Default)]
#[layer(custom = "rotary")]
pub struct Rotary(pub Vec<f32>);

/// A unit struct.
#[derive(ModuleTree, Debug)]
pub struct Identity;

/// A tuple struct.
#[derive(ModuleTree, Debug, Default)]
pub struct Pair(pub Linear, #[tree(skip)] pub usize, pub Option<Linear>);

/// An enum with every variant style.
#[derive(ModuleTree, Debug)]
pub enum Mlp {
    Dense(Linear),
    Gated {
        gate_proj: Linear,
        #[tree(rename = "up")]
        up_proj: Box<Linear>,
        #[tree(skip)]
        act: fn(f32) -> f32,
    },
    Tuple(Linear, Linear),
    Identity,
}

/// Routed experts as a type.
#[derive(ModuleTree, Debug, Default)]
#[expert]
pub struct Experts {
    pub experts: Vec<Linear>,
}

/// A shared expert as a type.
#[derive(ModuleTree, Debug, Default)]
#[expert(shared)]
pub struct SharedExpert {
    pub up: Linear,
}

/// Fields of foreign types tagged as layers, and every container.
#[derive(ModuleTree, Debug)]
pub struct Block {
    #[layer(kind = "router")]
    pub gate: [f32; 4],
    #[layer(kind = "norm")]
    pub norm: (f32, f32),
    #[layer(kind = "linear", head)]
    pub lm_head: Vec<f32>,
    #[expert]
    pub experts: Vec<Linear>,
    pub routed: Experts,
    #[expert(shared)]
    pub shared: Option<Box<Linear>>,
    pub frozen: Arc<Linear>,
    pub by_name: BTreeMap<String, Linear>,
    pub by_hash: HashMap<String, Rotary>,
    pub stack: [Pair; 2],
    pub tuple: (Linear, Rotary, Identity),
    pub mlp: Mlp,
    pub shared_expert: SharedExpert,
    #[tree(rename = "self_attn.rotary_emb")]
    pub rotary: Rotary,
    pub r#type: Identity,
    #[tree(skip)]
    pub top_k: usize,
}

/// Lifetime, type and const parameters, a where clause, a skipped and a phantom parameter.
#[derive(ModuleTree, Debug)]
pub struct Generic<'a, L, S, B, const N: usize>
where
    L: core::fmt::Debug,
{
    #[tree(layers)]
    pub layers: [L; N],
    pub borrowed: &'a Linear,
    #[tree(skip)]
    pub state: S,
    pub backend: PhantomData<B>,
}

/// A generic enum.
#[derive(ModuleTree, Debug)]
pub enum Either<A, B> {
    Left(A),
    Right { right: B },
}

/// `bound` and `register` spelled out.
#[derive(ModuleTree, Debug)]
#[tree(bound = "T: ModuleTree", register = false)]
pub struct Bounded<T> {
    pub inner: T,
}

/// An empty enum.
#[derive(ModuleTree, Debug)]
pub enum Never {}

fn linear() -> Linear {
    Linear::default()
}

#[test]
fn the_linted_types_walk() {
    let frozen = linear();
    let block = Block {
        gate: [0.0; 4],
        norm: (1.0, 0.0),
        lm_head: vec![],
        experts: vec![linear()],
        routed: Experts {
            experts: vec![linear()],
        },
        shared: Some(Box::new(linear())),
        frozen: Arc::new(linear()),
        by_name: BTreeMap::from([("b".to_owned(), linear()), ("a".to_owned(), linear())]),
        by_hash: HashMap::from([("rope".to_owned(), Rotary::default())]),
        stack: [Pair::default(), Pair(linear(), 1, Some(linear()))],
        tuple: (linear(), Rotary::default(), Identity),
        mlp: Mlp::Gated {
            gate_proj: linear(),
            up_proj: Box::new(linear()),
            act: |x| x,
        },
        shared_expert: SharedExpert::default(),
        rotary: Rotary::default(),
        r#type: Identity,
        top_k: 2,
    };
    let generic: Generic<'_, Either<Linear, Bounded<Linear>>, String, Never, 2> = Generic {
        layers: [
            Either::Left(linear()),
            Either::Right {
                right: Bounded { inner: linear() },
            },
        ],
        borrowed: &frozen,
        state: String::new(),
        backend: PhantomData,
    };
    let paths = |nodes: Vec<moduletree::NamedModule>| -> Vec<String> {
        nodes
            .into_iter()
            .map(|node| node.path().to_owned())
            .collect()
    };
    assert_eq!(
        paths(moduletree::named_modules(&block)),
        [
            "",
            "gate",
            "norm",
            "lm_head",
            "experts",
            "experts.0",
            "routed",
            "routed.experts",
            "routed.experts.0",
            "shared",
            "frozen",
            "by_name",
            "by_name.a",
            "by_name.b",
            "by_hash",
            "by_hash.rope",
            "stack",
            "stack.0",
            "stack.0.0",
            "stack.1",
            "stack.1.0",
            "stack.1.2",
            "tuple",
            "tuple.0",
            "tuple.1",
            "tuple.2",
            "mlp",
            "mlp.gate_proj",
            "mlp.up",
            "shared_expert",
            "shared_expert.up",
            "self_attn.rotary_emb",
            "type",
        ]
    );
    assert_eq!(
        paths(moduletree::named_modules(&generic)),
        [
            "",
            "layers",
            "layers.0",
            "layers.1",
            "layers.1.right",
            "layers.1.right.inner",
            "borrowed",
        ]
    );
    assert_eq!(block.top_k, 2);
    assert!(matches!(&block.mlp, Mlp::Gated { act, .. } if (act)(2.0) > 1.0));
    assert_eq!(generic.state, "");
}
