//! burn's own LoRA driven by target specs: the `ParamGroup` of a resolved spec adapts exactly the
//! layers the spec resolves to (through enum variants too), per-layer ranks go through
//! `LoraPlan`, and training changes only the adapters while the loss goes down.
#![cfg(feature = "burn")]

mod burn_common;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor};
use burn_common::snapshot;
use moduletree::ModuleTree;
use moduletree::burn::{BurnError, LoraPlan, LoraSelection};
use moduletree::target::TargetSpec;

#[derive(Module, ModuleTree, Debug)]
struct Block {
    norm: LayerNorm,
    attn_proj: Linear,
    fc1: Linear,
    fc2: Linear,
}

#[derive(Module, ModuleTree, Debug)]
struct Model {
    embed: Embedding,
    blocks: Vec<Block>,
    head: Linear,
}

impl Block {
    fn new(device: &Device) -> Self {
        Block {
            norm: LayerNormConfig::new(8).init(device),
            attn_proj: LinearConfig::new(8, 8).init(device),
            fc1: LinearConfig::new(8, 16).init(device),
            fc2: LinearConfig::new(16, 8).init(device),
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.attn_proj.forward(self.norm.forward(x));
        x.clone() + self.fc2.forward(relu(self.fc1.forward(x)))
    }
}

impl Model {
    fn new(device: &Device) -> Self {
        Model {
            embed: EmbeddingConfig::new(16, 8).init(device),
            blocks: vec![Block::new(device), Block::new(device)],
            head: LinearConfig::new(8, 4).init(device),
        }
    }

    /// Runs on features directly: the synthetic task regresses a fixed random map.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.blocks.iter().fold(x, |x, block| block.forward(x));
        self.head.forward(x)
    }
}

/// A model whose blocks are enum variants: burn's record paths name the variant, the tree's
/// paths do not.
#[allow(
    clippy::large_enum_variant,
    reason = "burn's derive does not box module fields"
)]
#[derive(Module, ModuleTree, Debug)]
enum Layer {
    Dense(Block),
    Projection(Linear),
}

#[derive(Module, ModuleTree, Debug)]
struct Mixed {
    layers: Vec<Layer>,
}

fn adapters<T: ModuleTree>(model: &T) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    moduletree::walk(model, |node| {
        if let Some(linear) = node.downcast_ref::<Linear>()
            && let Some(adapter) = linear.weight.adapter()
        {
            found.push((node.path().to_string(), adapter.a.dims()[1]));
        }
    });
    found
}

fn adapted_paths<T: ModuleTree>(model: &T) -> Vec<String> {
    adapters(model).into_iter().map(|(path, _)| path).collect()
}

fn resolved(model: &impl ModuleTree, spec: &TargetSpec) -> Vec<String> {
    spec.resolve(model)
        .unwrap()
        .paths()
        .map(str::to_owned)
        .collect()
}

#[test]
fn apply_lora_adapts_exactly_the_resolved_layers() {
    let device = Device::default();
    for entries in [
        vec!["attn_proj", "fc2"],
        vec!["blocks.<>.fc1"],
        vec!["all-linear"],
        vec!["re:.*\\.1\\.fc.*", "head"],
    ] {
        let spec = TargetSpec::parse(&entries).unwrap();
        let model = Model::new(&device);
        let expected = resolved(&model, &spec);
        assert!(!expected.is_empty());
        let selection = LoraSelection::resolve(&model, &spec).unwrap();
        assert_eq!(selection.paths().collect::<Vec<_>>(), expected);
        let model = model.apply_lora(selection.lora(4, 8.0));
        assert_eq!(adapted_paths(&model), expected, "{entries:?}");
    }
}

#[test]
fn layer_filters_and_exclusions_reach_the_param_group() {
    let device = Device::default();
    let model = Model::new(&device);
    let spec = TargetSpec::parse(["attn_proj", "re:.*\\.fc\\d"])
        .unwrap()
        .with_exclusions(["fc1"])
        .unwrap()
        .with_layers([1]);
    let selection = LoraSelection::resolve(&model, &spec).unwrap();
    assert_eq!(
        selection.weight_paths().collect::<Vec<_>>(),
        ["blocks.1.attn_proj.weight", "blocks.1.fc2.weight"]
    );
    let model = model.apply_lora(selection.lora(2, 4.0));
    assert_eq!(
        adapted_paths(&model),
        ["blocks.1.attn_proj", "blocks.1.fc2"]
    );
}

#[test]
fn param_group_uses_record_paths_through_enum_variants() {
    let device = Device::default();
    let model = Mixed {
        layers: vec![
            Layer::Dense(Block::new(&device)),
            Layer::Projection(LinearConfig::new(8, 8).init(&device)),
            Layer::Dense(Block::new(&device)),
        ],
    };
    let spec = TargetSpec::parse(["fc2", "layers.1"]).unwrap();
    let selection = LoraSelection::resolve(&model, &spec).unwrap();
    assert_eq!(
        selection.paths().collect::<Vec<_>>(),
        ["layers.0.fc2", "layers.1", "layers.2.fc2"]
    );
    assert_eq!(
        selection.weight_paths().collect::<Vec<_>>(),
        [
            "layers.0.Dense.fc2.weight",
            "layers.1.Projection.weight",
            "layers.2.Dense.fc2.weight"
        ]
    );
    let model = model.apply_lora(selection.lora(2, 4.0));
    assert_eq!(
        adapted_paths(&model),
        ["layers.0.fc2", "layers.1", "layers.2.fc2"]
    );
}

#[test]
fn per_layer_ranks_go_through_a_plan() {
    let device = Device::default().autodiff();
    let model = Model::new(&device);
    let spec = TargetSpec::parse(["attn_proj", "fc2"])
        .unwrap()
        .with_rank(4)
        .with_rank_pattern("fc2", 2)
        .unwrap()
        .with_alpha_pattern("blocks.1.attn_proj", 16.0)
        .unwrap();
    let plan = LoraPlan::resolve(&model, &spec).unwrap();
    assert_eq!(plan.groups().len(), 3);
    let error = plan.single().unwrap_err();
    assert!(matches!(error, BurnError::PerLayerRanks { ref groups } if groups.len() == 3));
    assert!(
        error
            .to_string()
            .contains("apply it with `LoraPlan::apply`"),
        "{error}"
    );
    let model = plan.apply(model);
    assert_eq!(
        adapters(&model),
        [
            ("blocks.0.attn_proj".to_owned(), 4),
            ("blocks.0.fc2".to_owned(), 2),
            ("blocks.1.attn_proj".to_owned(), 4),
            ("blocks.1.fc2".to_owned(), 2),
        ]
    );
    let scale = |block: usize| {
        model.blocks[block]
            .attn_proj
            .weight
            .adapter()
            .unwrap()
            .scale
    };
    assert!((scale(0) - 8.0 / 4.0).abs() < 1e-12);
    assert!((scale(1) - 16.0 / 4.0).abs() < 1e-12);
    // Every factor stays trainable and every base is frozen: one pass, not one per group.
    for block in &model.blocks {
        for linear in [&block.attn_proj, &block.fc2] {
            let adapter = linear.weight.adapter().unwrap();
            assert!(adapter.a.is_require_grad() && adapter.b.is_require_grad());
            assert!(!linear.weight.base().is_require_grad());
        }
        assert!(!block.fc1.weight.is_require_grad());
    }
}

#[test]
fn a_uniform_plan_is_one_burn_lora() {
    let device = Device::default();
    let model = Model::new(&device);
    let spec = TargetSpec::parse(["fc1"])
        .unwrap()
        .with_rank(3)
        .with_alpha(6.0);
    let lora = LoraPlan::resolve(&model, &spec).unwrap().single().unwrap();
    assert_eq!((lora.rank, lora.alpha), (3, 6.0));
    let model = model.apply_lora(lora);
    assert_eq!(
        adapters(&model),
        [
            ("blocks.0.fc1".to_owned(), 3),
            ("blocks.1.fc1".to_owned(), 3)
        ]
    );
}

#[test]
fn selections_that_cannot_be_adapted_are_refused() {
    let device = Device::default();
    let model = Model::new(&device);
    let error = LoraSelection::from_paths(&model, ["blocks.0.norm"]).unwrap_err();
    assert!(matches!(&error, BurnError::NoAdaptableWeight { path, .. } if path == "blocks.0.norm"));
    assert_eq!(
        error.to_string(),
        "the norm layer `blocks.0.norm` has no 2-D weight for burn's LoRA to adapt"
    );
    let error = LoraSelection::from_paths(&model, ["blocks.0.fc9"]).unwrap_err();
    assert!(matches!(&error, BurnError::UnknownLayer { path } if path == "blocks.0.fc9"));
    let error = LoraSelection::from_paths(&model, ["blocks.0"]).unwrap_err();
    assert!(matches!(&error, BurnError::NotALayer { path } if path == "blocks.0"));
    let spec = TargetSpec::parse(["fc9"]).unwrap();
    let error = LoraSelection::resolve(&model, &spec).unwrap_err();
    assert!(matches!(error, BurnError::Target(_)), "{error}");
    let error = LoraPlan::new()
        .with(
            &LoraSelection::from_paths(&model, ["head"]).unwrap(),
            0,
            1.0,
        )
        .unwrap_err();
    assert!(matches!(error, BurnError::ZeroRank));
    let head = LoraSelection::from_paths(&model, ["head"]).unwrap();
    let error = LoraPlan::new()
        .with(&head, 2, 4.0)
        .unwrap()
        .with(&head, 4, 4.0)
        .unwrap_err();
    assert!(matches!(&error, BurnError::Overlap { path, .. } if path == "head.weight"));
}

fn mse(prediction: Tensor<3>, target: Tensor<3>) -> Tensor<1> {
    (prediction - target).powi_scalar(2).mean()
}

fn scalar(loss: Tensor<1>) -> f32 {
    loss.into_data().try_to_vec::<f32>().unwrap()[0]
}

#[test]
fn training_changes_only_adapters_and_lowers_the_loss() {
    let device = Device::default().autodiff();
    let model = Model::new(&device);
    let spec = TargetSpec::parse(["attn_proj", "fc2"]).unwrap();
    let selection = LoraSelection::resolve(&model, &spec).unwrap();
    let mut model = model.apply_lora(selection.lora(4, 8.0));
    let before = snapshot(&model);
    assert_eq!(
        before.keys().filter(|key| key.contains(".lora.")).count(),
        8
    );

    let inputs = Tensor::<3>::random([4, 6, 8], Distribution::Normal(0.0, 1.0), &device);
    let targets = Tensor::<3>::random([4, 6, 4], Distribution::Normal(0.0, 1.0), &device);
    let mut optimizer = AdamConfig::new().init();
    let mut losses = Vec::new();
    for _ in 0..30 {
        let loss = mse(model.forward(inputs.clone()), targets.clone());
        losses.push(scalar(loss.clone()));
        let gradients = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-2, model, gradients);
    }
    let last = scalar(mse(model.forward(inputs), targets));
    assert!(last < losses[0] * 0.9, "loss {} -> {last}", losses[0]);

    let after = snapshot(&model);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (path, values) in &before {
        if path.contains(".lora.") {
            assert_ne!(
                &after[path], values,
                "adapter factor `{path}` did not train"
            );
        } else {
            assert_eq!(&after[path], values, "base parameter `{path}` changed");
        }
    }
}

#[derive(Module, ModuleTree, Debug)]
struct Renamed {
    #[tree(rename = "self_attn")]
    attention: Block,
    #[tree(rename = "model.proj")]
    projection: Linear,
}

#[test]
fn param_group_follows_tree_renames_by_parameter_id() {
    let device = Device::default();
    let model = Renamed {
        attention: Block::new(&device),
        projection: LinearConfig::new(8, 8).init(&device),
    };
    let spec = TargetSpec::parse(["self_attn.fc2", "model.proj"]).unwrap();
    let selection = LoraSelection::resolve(&model, &spec).unwrap();
    assert_eq!(
        selection.weight_paths().collect::<Vec<_>>(),
        ["attention.fc2.weight", "projection.weight"]
    );
    let model = model.apply_lora(selection.lora(2, 4.0));
    assert_eq!(adapted_paths(&model), ["self_attn.fc2", "model.proj"]);
}
