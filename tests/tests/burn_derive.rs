//! `#[derive(Module, ModuleTree)]` on the same burn types: generic and non-generic structs with
//! `Vec`, `Option`, arrays and enums; burn-nn's layers as leaves; the tree's paths are burn's
//! record paths without enum variant names.
#![cfg(feature = "burn")]
#![deny(warnings)]

use burn::module::{Module, Param};
use burn::nn::attention::{MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, Conv3d, Conv3dConfig};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Gelu, LayerNorm, LayerNormConfig, Linear,
    LinearConfig, RmsNorm, RmsNormConfig,
};
use burn::tensor::{Device, Tensor};
use moduletree::burn::{PathMap, record_to_tree_path};
use moduletree::{Kind, ModuleTree, Role};

/// Not a module and no `ModuleTree`: burn's `#[module(skip)]` is enough for both derives.
#[derive(Clone, Debug)]
struct Settings {
    eps: f64,
}

#[derive(Module, ModuleTree, Debug)]
struct Mlp {
    up: Linear,
    down: Linear,
    act: Gelu,
    dropout: Dropout,
}

#[allow(
    clippy::large_enum_variant,
    reason = "burn's derive does not box module fields"
)]
#[derive(Module, ModuleTree, Debug)]
enum Mixer {
    Attention(MultiHeadAttention),
    Mlp(Mlp),
}

#[derive(Module, ModuleTree, Debug)]
struct Block {
    norm: RmsNorm,
    mixer: Mixer,
    extra: Option<Linear>,
    pair: [Linear; 2],
    scale: Param<Tensor<1>>,
    #[module(skip)]
    settings: Settings,
    width: usize,
}

#[derive(Module, ModuleTree, Debug)]
struct Convs {
    c1: Conv1d,
    c2: Conv2d,
    c3: Conv3d,
    norm: LayerNorm,
}

/// Generic over its head, with a `Vec` of the same parameter.
#[derive(Module, ModuleTree, Debug)]
struct Model<H: Module> {
    embed: Embedding,
    blocks: Vec<Block>,
    heads: Vec<H>,
    last: H,
    convs: Option<Convs>,
}

fn linear(device: &Device, d_in: usize, d_out: usize) -> Linear {
    LinearConfig::new(d_in, d_out).init(device)
}

fn block(device: &Device, attention: bool) -> Block {
    let mixer = if attention {
        Mixer::Attention(MultiHeadAttentionConfig::new(8, 2).init(device))
    } else {
        Mixer::Mlp(Mlp {
            up: linear(device, 8, 16),
            down: linear(device, 16, 8),
            act: Gelu::new(),
            dropout: DropoutConfig::new(0.1).init(),
        })
    };
    Block {
        norm: RmsNormConfig::new(8).init(device),
        mixer,
        extra: attention.then(|| linear(device, 8, 8)),
        pair: [linear(device, 8, 8), linear(device, 8, 8)],
        scale: Param::from_tensor(Tensor::ones([8], device)),
        settings: Settings { eps: 1e-5 },
        width: 8,
    }
}

fn model(device: &Device) -> Model<Linear> {
    Model {
        embed: EmbeddingConfig::new(16, 8).init(device),
        blocks: vec![block(device, true), block(device, false)],
        heads: vec![linear(device, 8, 4), linear(device, 8, 4)],
        last: linear(device, 8, 16),
        convs: Some(Convs {
            c1: Conv1dConfig::new(2, 2, 3).init(device),
            c2: Conv2dConfig::new([2, 2], [3, 3]).init(device),
            c3: Conv3dConfig::new([2, 2], [1, 1, 1]).init(device),
            norm: LayerNormConfig::new(8).init(device),
        }),
    }
}

fn nodes<T: ModuleTree>(model: &T) -> Vec<(String, Role, &'static str)> {
    let mut nodes = Vec::new();
    moduletree::walk(model, |node| {
        nodes.push((node.path().to_string(), node.role(), node.type_name()));
    });
    nodes
}

#[test]
fn walk_visits_burn_layers_and_skips_what_burn_skips() {
    let device = Device::default();
    let model = model(&device);
    assert_eq!(model.blocks[0].settings.eps, 1e-5);
    assert_eq!(model.blocks[0].width, 8);
    let paths: Vec<String> = nodes(&model).into_iter().map(|(path, _, _)| path).collect();
    let expected = [
        "",
        "embed",
        "blocks",
        "blocks.0",
        "blocks.0.norm",
        "blocks.0.mixer",
        "blocks.0.mixer.query",
        "blocks.0.mixer.key",
        "blocks.0.mixer.value",
        "blocks.0.mixer.output",
        "blocks.0.extra",
        "blocks.0.pair",
        "blocks.0.pair.0",
        "blocks.0.pair.1",
        "blocks.1",
        "blocks.1.norm",
        "blocks.1.mixer",
        "blocks.1.mixer.up",
        "blocks.1.mixer.down",
        "blocks.1.mixer.act",
        "blocks.1.mixer.dropout",
        "blocks.1.pair",
        "blocks.1.pair.0",
        "blocks.1.pair.1",
        "heads",
        "heads.0",
        "heads.1",
        "last",
        "convs",
        "convs.c1",
        "convs.c2",
        "convs.c3",
        "convs.norm",
    ];
    assert_eq!(paths, expected);
}

#[test]
fn burn_nn_layers_are_leaves_of_their_kinds() {
    let device = Device::default();
    let model = model(&device);
    let mut kinds = Vec::new();
    moduletree::walk(&model, |node| {
        if let Some(kind) = node.kind() {
            kinds.push((node.path().to_string(), node.type_name(), kind));
        }
    });
    let find = |path: &str| {
        kinds
            .iter()
            .find(|(seen, _, _)| seen == path)
            .map(|(_, type_name, kind)| (*type_name, *kind))
    };
    assert_eq!(find("embed"), Some(("Embedding", Kind::Embedding)));
    assert_eq!(find("blocks.0.norm"), Some(("RmsNorm", Kind::Norm)));
    assert_eq!(find("blocks.0.mixer.query"), Some(("Linear", Kind::Linear)));
    assert_eq!(find("convs.c1"), Some(("Conv1d", Kind::Conv)));
    assert_eq!(find("convs.c2"), Some(("Conv2d", Kind::Conv)));
    assert_eq!(find("convs.c3"), Some(("Conv3d", Kind::Conv)));
    assert_eq!(find("convs.norm"), Some(("LayerNorm", Kind::Norm)));
    // The attention and the activations are modules, not layers.
    assert_eq!(find("blocks.0.mixer"), None);
    assert_eq!(find("blocks.1.mixer.act"), None);
    assert_eq!(
        moduletree::find_all_linear_modules(&model),
        [
            "query", "key", "value", "output", "extra", "pair.<>", "up", "down", "heads.<>", "last"
        ]
    );
}

#[test]
fn mutable_walk_downcasts_to_burn_linear() {
    let device = Device::default();
    let mut model = model(&device);
    let mut linears = Vec::new();
    moduletree::walk_mut(&mut model, |node| {
        let path = node.path().to_string();
        if let Some(linear) = node.downcast_mut::<Linear>() {
            linears.push((path, linear.weight.dims()));
        }
    });
    assert_eq!(linears.len(), 14);
    assert_eq!(linears[0], ("blocks.0.mixer.query".to_owned(), [8, 8]));
    assert!(linears.contains(&("blocks.1.mixer.up".to_owned(), [8, 16])));
    assert!(linears.contains(&("last".to_owned(), [8, 16])));
}

#[test]
fn tree_paths_are_record_paths_without_enum_variants() {
    let device = Device::default();
    let model = model(&device);
    let map = PathMap::new(&model);
    let tree_nodes: Vec<String> = nodes(&model).into_iter().map(|(path, _, _)| path).collect();
    for param in map.params() {
        assert_eq!(
            param.tree,
            record_to_tree_path(&param.record, &["Attention", "Mlp"]),
            "{param:?}"
        );
        assert!(
            tree_nodes.iter().any(|node| node == param.tree_module()),
            "{} is owned by `{}`, which the tree lacks",
            param.record,
            param.tree_module()
        );
    }
    let pairs: Vec<(&str, &str)> = map
        .params()
        .iter()
        .map(|param| (param.record.as_str(), param.tree.as_str()))
        .collect();
    assert!(pairs.contains(&(
        "blocks.0.mixer.Attention.query.weight",
        "blocks.0.mixer.query.weight"
    )));
    assert!(pairs.contains(&("blocks.1.mixer.Mlp.down.bias", "blocks.1.mixer.down.bias")));
    assert!(pairs.contains(&("blocks.0.pair.1.weight", "blocks.0.pair.1.weight")));
    assert!(pairs.contains(&("blocks.0.scale", "blocks.0.scale")));
    assert!(pairs.contains(&("convs.c2.weight", "convs.c2.weight")));
    assert_eq!(
        map.to_record("blocks.0.mixer.value.weight"),
        Some("blocks.0.mixer.Attention.value.weight")
    );
    assert_eq!(
        map.to_tree("blocks.1.mixer.Mlp.up.weight"),
        Some("blocks.1.mixer.up.weight")
    );
    // Every leaf layer of the tree owns parameters in burn's record.
    for (path, role, _) in nodes(&model) {
        if let Role::Layer(_) = role {
            assert!(
                map.params().iter().any(|param| param.tree_module() == path),
                "layer `{path}` owns no parameter"
            );
        }
    }
}

#[test]
fn static_schema_lists_every_variant() {
    let mut paths = Vec::new();
    moduletree::walk(&<Model<Linear> as ModuleTree>::SCHEMA, |node| {
        if node.is_layer() {
            paths.push(node.path().to_string());
        }
    });
    assert!(paths.contains(&"blocks.<>.mixer.query".to_owned()));
    assert!(paths.contains(&"blocks.<>.mixer.up".to_owned()));
    assert!(paths.contains(&"last".to_owned()));
}

mod fixture_common;
mod schema_common;

/// The full static schema of every model type of this file, pinned.
#[test]
fn schemas_are_pinned() {
    let out = schema_common::schemas(&["burn_derive"], &[]);
    fixture_common::assert_snapshot("schemas/burn_derive.txt", &out);
}
