//! candle layers in the module tree: leaves and their kinds, tensors as parameters, delegating
//! wrappers, expert flags on a Mixtral-shaped model, per-expert adapters, and embedding slots.
#![cfg(feature = "candle")]

mod candle_common;
mod fixture_common;

use candle_common::{scratch, snapshot};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{
    Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, Embedding, LayerNorm, Linear, RmsNorm, VarBuilder,
    VarMap,
};
use moduletree::candle::{
    LoadMode, LoraAdapter, LoraConfig, LoraEmbedding, LoraLinear, PeftError, TargetModules,
    apply_lora, load_peft_adapter, save_peft_adapter,
};
use moduletree::{Kind, ModuleTree, named_modules};
use moduletree_candle_examples::mixtral::{MixtralConfig, MixtralForCausalLM};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

/// The largest absolute difference between two tensors of the same shape.
fn max_abs_diff(left: &Tensor, right: &Tensor) -> f32 {
    (left - right)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn ramp(shape: &[usize], scale: f32) -> Tensor {
    let count: usize = shape.iter().product();
    #[expect(clippy::cast_precision_loss, reason = "small test tensors")]
    let values: Vec<f32> = (0..count)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) * scale)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

#[derive(ModuleTree)]
struct Everything {
    linear: Linear,
    embedding: Embedding,
    conv1d: Conv1d,
    conv2d: Conv2d,
    layer_norm: LayerNorm,
    rms_norm: RmsNorm,
    scale: Tensor,
    slot: LoraLinear,
    table: LoraEmbedding,
}

#[test]
fn candle_layers_are_leaves_of_their_kinds_and_tensors_are_not_nodes() {
    let model = Everything {
        linear: Linear::new(zeros(&[2, 3]), None),
        embedding: Embedding::new(zeros(&[4, 3]), 3),
        conv1d: Conv1d::new(zeros(&[2, 3, 1]), None, Conv1dConfig::default()),
        conv2d: Conv2d::new(zeros(&[2, 3, 1, 1]), None, Conv2dConfig::default()),
        layer_norm: LayerNorm::new(zeros(&[3]), zeros(&[3]), 1e-5),
        rms_norm: RmsNorm::new(zeros(&[3]), 1e-5),
        scale: zeros(&[1]),
        slot: LoraLinear::new(Linear::new(zeros(&[2, 3]), None)),
        table: LoraEmbedding::new(Embedding::new(zeros(&[4, 3]), 3)),
    };
    let nodes: Vec<(String, &str, Option<Kind>)> = named_modules(&model)
        .into_iter()
        .map(|node| (node.path().to_owned(), node.type_name(), node.kind()))
        .collect();
    assert_eq!(
        nodes,
        [
            (String::new(), "Everything", None),
            ("linear".into(), "Linear", Some(Kind::Linear)),
            ("embedding".into(), "Embedding", Some(Kind::Embedding)),
            ("conv1d".into(), "Conv1d", Some(Kind::Conv)),
            ("conv2d".into(), "Conv2d", Some(Kind::Conv)),
            ("layer_norm".into(), "LayerNorm", Some(Kind::Norm)),
            ("rms_norm".into(), "RmsNorm", Some(Kind::Norm)),
            ("slot".into(), "LoraLinear", Some(Kind::Linear)),
            ("table".into(), "LoraEmbedding", Some(Kind::Embedding)),
        ]
    );
    // the static schema says the same
    let schema: Vec<String> = named_modules(&Everything::SCHEMA)
        .into_iter()
        .map(|node| node.path().to_owned())
        .collect();
    assert_eq!(schema.len(), nodes.len());
}

/// A linear with a tracing span, as candle-transformers writes them.
struct TracedLinear {
    inner: Linear,
    calls: std::cell::Cell<usize>,
}

impl Module for TracedLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.calls.set(self.calls.get() + 1);
        self.inner.forward(x)
    }
}

moduletree::delegate_layer!(TracedLinear => inner, Kind::Linear);

#[derive(ModuleTree)]
struct Traced {
    proj: TracedLinear,
}

#[derive(ModuleTree)]
struct Slots {
    proj: LoraLinear,
}

#[test]
fn a_delegating_wrapper_takes_a_merged_adapter_in_its_inner_layer() {
    let mut model = Traced {
        proj: TracedLinear {
            inner: Linear::new(ramp(&[3, 4], 0.1), None),
            calls: std::cell::Cell::new(0),
        },
    };
    assert_eq!(moduletree::find_all_linear_modules(&model), ["proj"]);
    let x = ramp(&[2, 4], 0.3);
    let before = model.proj.forward(&x).unwrap();

    // an adapter for `proj`, saved from a slot model of the same shape
    let mut slots = Slots {
        proj: LoraLinear::new(model.proj.inner.clone()),
    };
    let adapter = LoraAdapter::new(ramp(&[2, 4], 0.2), ramp(&[3, 2], 0.1), 4.0, false).unwrap();
    slots.proj.add_adapter("default", adapter.clone()).unwrap();
    // A slot does not know its path: its own errors say "the slot".
    let again = slots.proj.add_adapter("default", adapter).unwrap_err();
    assert_eq!(
        again.to_string(),
        "the slot already holds an adapter named `default`"
    );
    let expected = slots.proj.forward(&x).unwrap();
    let dir = scratch("traced");
    save_peft_adapter(&slots, &dir, &LoraConfig::new(2, 4.0)).unwrap();

    load_peft_adapter(&mut model, &dir, LoadMode::Merge).unwrap();
    let after = model.proj.forward(&x).unwrap();
    let diff = max_abs_diff(&after, &expected);
    assert!(diff < 1e-5, "{diff}");
    let moved = max_abs_diff(&expected, &before);
    assert!(moved > 1e-2, "the adapter changes the output");
    assert_eq!(model.proj.calls.get(), 2);
}

fn mixtral() -> (MixtralForCausalLM<LoraLinear>, MixtralConfig) {
    let config = MixtralConfig::tiny();
    let weights = config.random_weights(7, &Device::Cpu).unwrap();
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    (MixtralForCausalLM::new(&vb, &config).unwrap(), config)
}

#[test]
fn expert_flags_are_set_on_expert_projections_only() {
    let (mut model, config) = mixtral();
    let marked = moduletree::set_linear_is_expert(&mut model);
    assert_eq!(
        marked.len(),
        config.num_hidden_layers * config.num_local_experts * 3
    );
    assert!(
        marked
            .iter()
            .all(|path| path.contains(".block_sparse_moe.experts."))
    );
    let mut flagged = Vec::new();
    moduletree::walk(&model, |node| {
        if let Some(slot) = node.downcast_ref::<LoraLinear>()
            && slot.is_expert()
        {
            flagged.push(node.path().to_string());
        }
    });
    assert_eq!(flagged, marked);
    assert_eq!(moduletree::find_all_router_modules(&model), ["gate"]);
}

#[test]
fn every_expert_gets_its_own_adapter() {
    let (mut model, config) = mixtral();
    let varmap = VarMap::new();
    let lora = LoraConfig {
        target_modules: Some(TargetModules::Regex(r".*\.experts\.\d+\.w[12]".to_owned())),
        ..LoraConfig::new(2, 4.0)
    };
    let adapted: Vec<String> = apply_lora(&mut model, &lora, &varmap)
        .unwrap()
        .into_iter()
        .map(|layer| layer.path)
        .collect();
    assert_eq!(
        adapted.len(),
        config.num_hidden_layers * config.num_local_experts * 2
    );
    assert_eq!(adapted[0], "model.layers.0.block_sparse_moe.experts.0.w1");
    assert_eq!(adapted[1], "model.layers.0.block_sparse_moe.experts.0.w2");
    assert_eq!(varmap.all_vars().len(), 2 * adapted.len());
    // a router is not a slot: asking for it is refused, and nothing changes
    let before = snapshot(&model);
    let error = apply_lora(
        &mut model,
        &LoraConfig::new(2, 4.0).with_target_modules(["block_sparse_moe.gate"]),
        &varmap,
    )
    .unwrap_err();
    assert!(
        matches!(
            &error,
            PeftError::NotASlot {
                type_name: "Linear",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(snapshot(&model), before);
}

#[derive(ModuleTree)]
struct Embedder {
    embed_tokens: LoraEmbedding,
}

#[derive(ModuleTree)]
struct PlainEmbedder {
    embed_tokens: Embedding,
}

#[test]
fn embedding_adapters_round_trip_and_merge() {
    let table = ramp(&[6, 4], 0.1);
    let mut model = Embedder {
        embed_tokens: LoraEmbedding::new(Embedding::new(table.clone(), 4)),
    };
    let ids = Tensor::new(&[[0u32, 5, 2]], &Device::Cpu).unwrap();
    let base = model.embed_tokens.forward(&ids).unwrap();

    let varmap = VarMap::new();
    let config = LoraConfig::new(2, 6.0).with_target_modules(["embed_tokens"]);
    apply_lora(&mut model, &config, &varmap).unwrap();
    {
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "base_model.model.embed_tokens.lora_embedding_A",
                "base_model.model.embed_tokens.lora_embedding_B"
            ]
        );
        // PEFT's init: A zero, so the output is unchanged; give A values as training would
        let a = &data["base_model.model.embed_tokens.lora_embedding_A"];
        assert_eq!(a.dims(), [2, 6]);
        a.set(&ramp(&[2, 6], 0.05)).unwrap();
    }
    let adapted = model.embed_tokens.forward(&ids).unwrap();
    // by hand: base + scale · Aᵀ[ids] · Bᵀ with scale = 6 / 2
    let (_, adapter) = model.embed_tokens.active_adapter().unwrap();
    let by_hand = (adapter
        .a()
        .t()
        .unwrap()
        .contiguous()
        .unwrap()
        .embedding(&ids.flatten_all().unwrap())
        .unwrap()
        .matmul(&adapter.b().t().unwrap())
        .unwrap()
        * 3.0)
        .unwrap();
    let diff = max_abs_diff(&(&adapted - &base).unwrap().squeeze(0).unwrap(), &by_hand);
    assert!(diff < 1e-5);

    let dir = scratch("embedding");
    save_peft_adapter(&model, &dir, &config).unwrap();
    let mut plain = PlainEmbedder {
        embed_tokens: Embedding::new(table, 4),
    };
    load_peft_adapter(&mut plain, &dir, LoadMode::Merge).unwrap();
    let merged = plain.embed_tokens.forward(&ids).unwrap();
    let diff = max_abs_diff(&merged, &adapted);
    assert!(diff < 1e-5, "{diff}");
    model.embed_tokens.merge().unwrap();
    let diff = max_abs_diff(&model.embed_tokens.forward(&ids).unwrap(), &adapted);
    assert!(diff < 1e-5);
}
mod schema_common;

/// The full static schema of every model type of this file, pinned.
#[test]
fn schemas_are_pinned() {
    let out = schema_common::schemas(&["candle_layers", "moduletree_candle_examples"], &[]);
    fixture_common::assert_snapshot("schemas/candle_layers.txt", &out);
}
