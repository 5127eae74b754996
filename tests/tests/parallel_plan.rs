//! `ParallelPlan` without a framework: every refusal with its message, plans from a schema, the
//! expert rank normalisation, and the JSON and DeepSpeed exports.

use moduletree::parallel::{
    Collective, ExpertShare, Factor, Group, Input, Layout, Output, ParallelConfig, ParallelPlan,
    PlanError, Shard,
};
use moduletree::target::TargetSpec;

mod fixture_common;

/// The model types of the `moduletree` command (`cli/src/models.rs`).
#[path = "../../cli/src/models.rs"]
mod parallel_models;
use moduletree::{Kind, ModuleTree, Node, NodeInfo, Parallel, Schema};

/// A leaf that knows its weight shape.
#[derive(ModuleTree, Clone)]
#[layer(kind = "linear")]
struct W {
    shape: Vec<usize>,
}

fn w(shape: &[usize]) -> W {
    W {
        shape: shape.to_vec(),
    }
}

fn shape(node: &Node<'_, '_>) -> Option<Vec<usize>> {
    node.downcast_ref::<W>().map(|w| w.shape.clone())
}

#[derive(ModuleTree)]
struct Mlp {
    #[layer(kind = "linear", parallel = "column")]
    up_proj: W,
    #[layer(kind = "linear", parallel = "row")]
    down_proj: W,
}

fn mlp(inner: usize) -> Mlp {
    Mlp {
        up_proj: w(&[inner, 16]),
        down_proj: w(&[16, inner]),
    }
}

#[derive(ModuleTree)]
struct Packed {
    #[layer(kind = "linear", parallel = "packed_column", parts = [2, 1, 1])]
    qkv_proj: W,
    #[layer(kind = "linear", parallel = "packed_row", parts = [1, 1])]
    out_proj: W,
    #[layer(kind = "linear", head, parallel = "column_gather")]
    lm_head: W,
}

/// A packed `qkv_proj` of `out` rows (parts 2:1:1), a packed row projection and a gathered head.
fn packed(out: usize) -> Packed {
    Packed {
        qkv_proj: w(&[out, 16]),
        out_proj: w(&[16, 16]),
        lm_head: w(&[32, 16]),
    }
}

#[derive(ModuleTree)]
struct Moe {
    #[layer(kind = "router")]
    gate: W,
    #[expert]
    experts: Vec<Mlp>,
    #[expert(shared)]
    shared_expert: Mlp,
}

#[derive(ModuleTree)]
struct Model {
    #[tree(layers)]
    layers: Vec<Moe>,
}

fn moe(experts: usize) -> Model {
    Model {
        layers: (0..2)
            .map(|_| Moe {
                gate: w(&[experts, 16]),
                experts: (0..experts).map(|_| mlp(8)).collect(),
                shared_expert: mlp(32),
            })
            .collect(),
    }
}

fn plan<T: ModuleTree>(model: &T, config: ParallelConfig) -> Result<ParallelPlan, PlanError> {
    ParallelPlan::builder(config).sizes(shape).build(model)
}

#[test]
fn an_output_that_does_not_divide_is_refused_with_the_layer_and_the_number() {
    let error = plan(&mlp(10), ParallelConfig::new(4, 1, 1)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer `up_proj`: the output size of weight [10, 16] is 10, which does not divide over the tensor group of 4 ranks"
    );
    let error = plan(&mlp(12), ParallelConfig::new(8, 1, 1)).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("layer `up_proj`: the output size"),
        "{error}"
    );
    assert!(plan(&mlp(12), ParallelConfig::new(4, 1, 1)).is_ok());
}

#[test]
fn packed_parts_divide_one_by_one() {
    // 24 = 12 + 6 + 6: each part divides by 2, not by 4.
    assert!(plan(&packed(24), ParallelConfig::new(2, 1, 1)).is_ok());
    let error = plan(&packed(24), ParallelConfig::new(4, 1, 1)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer `qkv_proj`: part 1 of the output size of weight [24, 16] is 6, which does not divide over the tensor group of 4 ranks"
    );
    let error = plan(&packed(10), ParallelConfig::new(1, 1, 1)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer `qkv_proj`: the packed axis of length 10 does not split into parts in the proportions [2, 1, 1]"
    );
    let good = plan(&packed(32), ParallelConfig::new(4, 1, 1)).unwrap();
    let qkv = good.layer("qkv_proj").unwrap();
    assert_eq!(qkv.weight.shards[0].layout, Layout::Packed(vec![2, 1, 1]));
    // Rank 1 of 4 holds rows 4..8 of q (0..16), 18..20 of k (16..24) and 26..28 of v (24..32).
    assert_eq!(
        qkv.weight.shards[0].indices(32, 4, 1).unwrap(),
        [4, 5, 6, 7, 18, 19, 26, 27]
    );
    let out = good.layer("out_proj").unwrap();
    assert_eq!(out.weight.shards[0].dim, 1);
    assert_eq!(out.input, Input::Split(Group::Tensor));
    let head = good.layer("lm_head").unwrap();
    assert_eq!(head.after_base, Collective::AllGather(Group::Tensor));
    assert_eq!(
        head.lora.unwrap().after_b,
        Collective::AllGather(Group::Tensor)
    );
}

#[test]
fn a_packed_layer_without_parts_is_refused() {
    // A schema written by hand can hold what the derive refuses.
    static SCHEMA: Schema =
        Schema::layer(NodeInfo::layer("GateUp", Kind::Linear).parallel(Parallel::PackedColumn));
    let error = ParallelPlan::builder(ParallelConfig::new(2, 1, 1))
        .build(&SCHEMA)
        .unwrap_err();
    assert!(matches!(error, PlanError::PackedWithoutParts { .. }));
    assert_eq!(
        error.to_string(),
        "layer `` is `parallel = \"packed_column\"` but declares no parts: give the fused projections' sizes or ratios with `#[layer(parts = [...])]` (gate and up: `parts = [1, 1]`)"
    );
    static NORM: Schema =
        Schema::layer(NodeInfo::layer("RmsNorm", Kind::Norm).parallel(Parallel::Column));
    let error = ParallelPlan::builder(ParallelConfig::default())
        .build(&NORM)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer `` is a `norm` layer, which cannot be `parallel = \"column\"`"
    );
}

#[test]
fn experts_that_do_not_divide_over_the_expert_group_are_refused() {
    let error = plan(&moe(6), ParallelConfig::new(1, 4, 1)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer `layers.0.experts` holds 6 routed experts, which do not divide over the expert group of 4 ranks"
    );
    let plan = plan(&moe(8), ParallelConfig::new(2, 4, 2)).unwrap();
    let owners: Vec<_> = plan
        .experts()
        .iter()
        .map(|owner| {
            (
                owner.path.as_str(),
                owner.fused,
                owner.experts,
                owner.per_rank,
            )
        })
        .collect();
    assert_eq!(
        owners,
        [
            ("layers.0.experts", false, Some(8), Some(2)),
            ("layers.1.experts", false, Some(8), Some(2)),
        ]
    );
    let expert = plan.layer("layers.1.experts.5.down_proj").unwrap();
    assert_eq!(
        expert.experts,
        Some(ExpertShare::One {
            index: Some(5),
            rank: Some(2)
        })
    );
    // A routed expert's row projection leaves partial sums to the experts' combine.
    assert_eq!(expert.output, Output::Partial(Group::ExpertTensor));
    assert_eq!(expert.after_base, Collective::Deferred(Group::ExpertTensor));
    let lora = expert.lora.unwrap();
    assert_eq!(
        (lora.after_a, lora.after_b),
        (Collective::None, Collective::Deferred(Group::ExpertTensor))
    );
    assert!(lora.sync.iter().any(|sync| sync.factor == Factor::B
        && sync.group == Group::ExpertTensor
        && !sync.broadcast));
    // The shared expert splits over the tensor group and reduces itself.
    let shared = plan.layer("layers.0.shared_expert.down_proj").unwrap();
    assert_eq!(shared.after_base, Collective::AllReduce(Group::Tensor));
    assert_eq!(shared.weight.shards, [Shard::even(1, Group::Tensor)]);
}

#[test]
fn a_routed_expert_outside_a_list_cannot_be_placed_by_index() {
    #[derive(ModuleTree)]
    struct Single {
        #[expert]
        expert: Mlp,
    }
    let single = Single { expert: mlp(8) };
    let error = plan(&single, ParallelConfig::new(1, 2, 1)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer `expert.up_proj` is a routed expert without an expert index: expert parallelism places experts by their index in a list (`Vec`) or in a `grouped_linear` bank"
    );
    assert!(plan(&single, ParallelConfig::new(2, 1, 1)).is_ok());
}

#[test]
fn expert_ranks_are_divided_by_top_k_or_refused() {
    let model = moe(4);
    let spec = TargetSpec::parse(["up_proj", "down_proj"])
        .unwrap()
        .with_rank(8);
    let config = ParallelConfig::new(1, 2, 1).normalize_expert_rank(2);
    let plan = ParallelPlan::builder(config)
        .sizes(shape)
        .lora(&spec)
        .build(&model)
        .unwrap();
    let rank = |path: &str| plan.layer(path).unwrap().lora.unwrap().rank;
    assert_eq!(rank("layers.0.experts.3.up_proj"), Some(4));
    assert_eq!(rank("layers.0.shared_expert.up_proj"), Some(8));
    assert_eq!(rank("layers.0.gate"), None);

    let spec = TargetSpec::parse(["up_proj"]).unwrap().with_rank(6);
    let config = ParallelConfig::new(1, 1, 1).normalize_expert_rank(4);
    let error = ParallelPlan::builder(config)
        .lora(&spec)
        .build(&model)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer `layers.0.experts.0.up_proj`: LoRA rank 6 does not divide by top_k = 4; choose a rank that is a multiple of 4, or leave expert ranks as they are"
    );
}

#[test]
fn group_sizes_of_zero_and_wrong_shapes_are_refused() {
    let error = plan(&mlp(8), ParallelConfig::new(0, 1, 1)).unwrap_err();
    assert_eq!(error.to_string(), "`tp` must be at least 1, found 0");
    let bad = Mlp {
        up_proj: w(&[8, 16, 2]),
        down_proj: w(&[16, 8]),
    };
    let error = plan(&bad, ParallelConfig::new(2, 1, 1)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer `up_proj`: expected a weight of two axes [out, in], found a weight of shape [8, 16, 2]"
    );
}

#[test]
fn a_plan_from_the_schema_places_the_same_as_one_from_a_value() {
    let from_schema = ParallelPlan::builder(ParallelConfig::new(2, 2, 1))
        .build(&Model::SCHEMA)
        .unwrap();
    let from_value = ParallelPlan::builder(ParallelConfig::new(2, 2, 1))
        .build(&moe(4))
        .unwrap();
    let placements = |plan: &ParallelPlan| {
        plan.layers()
            .iter()
            .map(|layer| {
                (
                    layer.path.clone(),
                    layer.style,
                    layer.weight.clone(),
                    layer.after_base,
                    layer
                        .lora
                        .clone()
                        .map(|lora| (lora.a, lora.after_a, lora.b, lora.after_b)),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(placements(&from_schema), placements(&from_value));
    assert_eq!(from_schema.layers()[1].path, "layers.<>.experts.<>.up_proj");
    // The schema knows no list lengths.
    assert_eq!(from_schema.experts()[0].experts, None);
}

#[test]
fn the_plan_serialises_every_layer_with_its_lora_placement() {
    let plan = plan(&mlp(8), ParallelConfig::new(2, 1, 1)).unwrap();
    let json = plan.to_json();
    assert_eq!(json["config"]["tp"], 2);
    let down = &json["layers"][1];
    assert_eq!(down["path"], "down_proj");
    assert_eq!(down["style"], "row");
    assert_eq!(down["kind"], "linear");
    assert_eq!(
        down["input"],
        serde_json::json!({"state": "split", "group": "tensor"})
    );
    assert_eq!(
        down["weight"],
        serde_json::json!([{"dim": 1, "group": "tensor", "layout": "even"}])
    );
    assert_eq!(
        down["after_base"],
        serde_json::json!({"op": "all_reduce", "group": "tensor"})
    );
    assert_eq!(
        down["lora"]["after_a"],
        serde_json::json!({"op": "all_reduce", "group": "tensor"})
    );
    assert_eq!(down["lora"]["b"], serde_json::json!([]));
    let up = &json["layers"][0];
    assert_eq!(
        up["lora"]["sync"],
        serde_json::json!([{"factor": "A", "group": "tensor", "broadcast": true}])
    );
}

#[test]
fn deepspeed_autotp_gets_one_spec_per_pattern() {
    let packed = packed(32);
    let config = plan(&packed, ParallelConfig::new(4, 1, 1))
        .unwrap()
        .deepspeed_autotp()
        .unwrap();
    assert_eq!(
        config,
        serde_json::json!({"tensor_parallel": {
            "autotp_size": 4,
            "partition_config": {"use_default_specs": false, "layer_specs": [
                {"patterns": [r"^qkv_proj\.weight$"], "partition_type": "column",
                 "shape": [[16, 8, 8], -1], "partition_dim": 0},
                {"patterns": [r"^out_proj\.weight$"], "partition_type": "row",
                 "shape": [-1, 2], "partition_dim": 1},
                {"patterns": [r"^lm_head\.weight$"], "partition_type": "column",
                 "gather_output": true},
            ]},
        }})
    );
    // Without sizes, unequal parts are only proportions, which DeepSpeed would read as sizes.
    let error = ParallelPlan::builder(ParallelConfig::new(4, 1, 1))
        .build(&Packed::SCHEMA)
        .unwrap()
        .deepspeed_autotp()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer `qkv_proj`: DeepSpeed AutoTP has no style for packed parts in the proportions [2, 1, 1] without their sizes: build the plan with the weights' sizes"
    );
    let moe = plan(&moe(4), ParallelConfig::new(2, 1, 1))
        .unwrap()
        .deepspeed_autotp()
        .unwrap();
    let specs = moe["tensor_parallel"]["partition_config"]["layer_specs"]
        .as_array()
        .unwrap()
        .clone();
    let expert = specs
        .iter()
        .find(|spec| {
            spec["patterns"][0]
                .as_str()
                .unwrap()
                .contains(r"experts\.\d+\.up_proj")
        })
        .unwrap();
    assert_eq!(expert["partition_type"], "skip");
    assert_eq!(
        expert["patterns"][0],
        r"^layers\.\d+\.experts\.\d+\.up_proj\.weight$"
    );
}

#[test]
fn exports_refuse_what_their_format_cannot_say() {
    let packed = packed(32);
    let error = plan(&packed, ParallelConfig::new(2, 1, 1))
        .unwrap()
        .transformers("")
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer `qkv_proj`: transformers has no style for packed parts [2, 1, 1]: its `packed_colwise` splits two equal halves"
    );
    let error = plan(&moe(4), ParallelConfig::new(2, 1, 1))
        .unwrap()
        .transformers("")
        .unwrap_err();
    assert!(
        error.to_string().starts_with(
            "layer `layers.<>.experts.<>.up_proj`: transformers has no style for routed experts kept one module per expert"
        ),
        "{error}"
    );

    #[derive(ModuleTree)]
    struct Split {
        #[layer(kind = "linear", parallel = "row_split")]
        proj: W,
    }
    let error = plan(&Split { proj: w(&[8, 8]) }, ParallelConfig::new(2, 1, 1))
        .unwrap()
        .deepspeed_autotp()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer `proj`: DeepSpeed AutoTP has no style for `row_split` (its row layers take an input that arrives split)"
    );

    #[allow(dead_code, reason = "only its schema is planned")]
    #[derive(ModuleTree)]
    enum Either {
        Wide(Mlp),
        Narrow(Swapped),
    }
    #[derive(ModuleTree)]
    struct Swapped {
        #[layer(kind = "linear", parallel = "row")]
        up_proj: W,
    }
    let either = ParallelPlan::builder(ParallelConfig::new(2, 1, 1))
        .build(&Either::SCHEMA)
        .unwrap();
    let message = "`up_proj` stands for layers of two styles, column and row: transformers' plans key one style per path pattern";
    assert_eq!(either.transformers("").unwrap_err().to_string(), message);
    assert_eq!(either.deepspeed_autotp().unwrap_err().to_string(), message);

    // A replicated layer under the key of a split one would be split by the plan's entry.
    #[allow(dead_code, reason = "only its schema is planned")]
    #[derive(ModuleTree)]
    enum Mixed {
        Wide(Mlp),
        Plain(Unstyled),
    }
    #[derive(ModuleTree)]
    struct Unstyled {
        up_proj: W,
    }
    let mixed = ParallelPlan::builder(ParallelConfig::new(2, 1, 1))
        .build(&Mixed::SCHEMA)
        .unwrap();
    assert!(matches!(
        mixed.transformers(""),
        Err(PlanError::ExportConflict { .. })
    ));
    assert!(matches!(
        mixed.deepspeed_autotp(),
        Err(PlanError::ExportConflict { .. })
    ));

    let error = plan(&mlp(8), ParallelConfig::new(2, 1, 1))
        .unwrap()
        .transformers("model")
        .unwrap_err();
    assert!(matches!(error, PlanError::NoSuchBase { .. }), "{error}");
}

#[test]
fn deepspeed_patterns_are_anchored_and_read_map_keys_as_names() {
    #[derive(ModuleTree)]
    struct Styled {
        #[layer(kind = "linear", parallel = "column")]
        fc: W,
    }
    #[derive(ModuleTree)]
    struct Plain {
        fc: W,
    }
    #[derive(ModuleTree)]
    struct Vision {
        layers: Vec<Plain>,
    }
    #[derive(ModuleTree)]
    struct Vlm {
        layers: Vec<Styled>,
        vision: Vision,
    }
    let vlm = Vlm {
        layers: vec![Styled { fc: w(&[8, 8]) }],
        vision: Vision {
            layers: vec![Plain { fc: w(&[8, 8]) }],
        },
    };
    let specs = plan(&vlm, ParallelConfig::new(2, 1, 1))
        .unwrap()
        .deepspeed_autotp()
        .unwrap();
    let pattern = specs["tensor_parallel"]["partition_config"]["layer_specs"][0]["patterns"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let regex = regex::Regex::new(&pattern).unwrap();
    assert!(regex.is_match("layers.0.fc.weight"));
    assert!(!regex.is_match("vision.layers.0.fc.weight"));

    #[derive(ModuleTree)]
    struct Blocks {
        blocks: std::collections::BTreeMap<String, Mlp>,
    }
    let specs = ParallelPlan::builder(ParallelConfig::new(2, 1, 1))
        .build(&Blocks::SCHEMA)
        .unwrap()
        .deepspeed_autotp()
        .unwrap();
    let pattern = specs["tensor_parallel"]["partition_config"]["layer_specs"][0]["patterns"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        regex::Regex::new(&pattern)
            .unwrap()
            .is_match("blocks.attn.up_proj.weight")
    );
}

#[test]
fn the_expert_index_is_the_one_below_the_first_routed_node() {
    // One `#[expert]` module per decoder layer: the layer index is no expert index.
    #[derive(ModuleTree)]
    struct Block {
        #[expert]
        expert: Mlp,
    }
    #[derive(ModuleTree)]
    struct Blocks {
        layers: Vec<Block>,
    }
    let blocks = Blocks {
        layers: vec![Block { expert: mlp(8) }, Block { expert: mlp(8) }],
    };
    let error = plan(&blocks, ParallelConfig::new(1, 2, 1)).unwrap_err();
    assert!(
        matches!(error, PlanError::ExpertWithoutIndex { .. }),
        "{error}"
    );

    // An expert with a list of its own: the expert's index is the one under `experts`.
    #[derive(ModuleTree)]
    struct DeepExpert {
        #[layer(kind = "linear", parallel = "column")]
        up: W,
        inner: Vec<W>,
    }
    #[derive(ModuleTree)]
    struct DeepMoe {
        #[expert]
        experts: Vec<DeepExpert>,
    }
    let deep = DeepMoe {
        experts: (0..4)
            .map(|_| DeepExpert {
                up: w(&[8, 8]),
                inner: vec![w(&[8, 8]), w(&[8, 8])],
            })
            .collect(),
    };
    let plan = plan(&deep, ParallelConfig::new(1, 2, 1)).unwrap();
    assert_eq!(plan.experts().len(), 1);
    assert_eq!(
        (plan.experts()[0].experts, plan.experts()[0].per_rank),
        (Some(4), Some(2))
    );
    let inner = plan.layer("experts.3.inner.1").unwrap();
    assert_eq!(
        inner.experts,
        Some(ExpertShare::One {
            index: Some(3),
            rank: Some(1)
        })
    );
    // A path past the list is no layer of the model.
    assert!(plan.layer("experts.9.up").is_none());
}

#[test]
fn normalised_expert_ranks_still_share_one_entry_per_pattern() {
    let model = moe(8);
    let spec = TargetSpec::parse(["all-linear"]).unwrap().with_rank(16);
    let config = ParallelConfig::new(1, 4, 1).normalize_expert_rank(8);
    let plan = ParallelPlan::builder(config)
        .sizes(shape)
        .lora(&spec)
        .build(&model)
        .unwrap();
    let experts = plan
        .layers()
        .iter()
        .filter(|layer| layer.path.contains("experts"))
        .count();
    assert_eq!(
        experts,
        2,
        "{:?}",
        plan.layers().iter().map(|l| &l.path).collect::<Vec<_>>()
    );
    assert_eq!(
        plan.layer("layers.1.experts.7.down_proj")
            .unwrap()
            .lora
            .unwrap()
            .rank,
        Some(2)
    );

    // A top_k beyond any rank is refused, not clamped.
    let spec = TargetSpec::parse(["up_proj"]).unwrap().with_rank(u32::MAX);
    let huge = ParallelConfig::new(1, 1, 1).normalize_expert_rank(1 << 40);
    let error = ParallelPlan::builder(huge)
        .lora(&spec)
        .build(&model)
        .unwrap_err();
    assert!(
        matches!(error, PlanError::RankNotDivisible { .. }),
        "{error}"
    );
}

#[test]
fn unsplit_layers_keep_whatever_shape_they_have() {
    #[derive(ModuleTree)]
    #[layer(kind = "norm")]
    struct Norm {
        shape: Vec<usize>,
    }
    #[derive(ModuleTree)]
    struct Block {
        norm: Norm,
        mlp: Mlp,
    }
    let block = Block {
        norm: Norm { shape: vec![16] },
        mlp: mlp(8),
    };
    let shapes = |node: &Node<'_, '_>| {
        shape(node).or_else(|| node.downcast_ref::<Norm>().map(|norm| norm.shape.clone()))
    };
    let plan = ParallelPlan::builder(ParallelConfig::new(2, 1, 1))
        .sizes(shapes)
        .build(&block)
        .unwrap();
    assert_eq!(plan.layer("norm").unwrap().shape, Some(vec![16]));
}

#[test]
fn unsplit_banks_are_still_dealt_out_over_the_expert_group() {
    #[derive(ModuleTree)]
    struct Experts {
        #[layer(kind = "grouped_linear")]
        gate_up_proj: W,
        #[layer(kind = "grouped_linear")]
        down_proj: W,
    }
    #[derive(ModuleTree)]
    struct Block {
        experts: Experts,
    }
    let block = Block {
        experts: Experts {
            gate_up_proj: w(&[4, 16, 8]),
            down_proj: w(&[4, 8, 8]),
        },
    };
    let plans = plan(&block, ParallelConfig::new(2, 2, 1))
        .unwrap()
        .transformers("")
        .unwrap();
    // Whole on every tensor rank: no `moe_tp_experts`, which would sum replicated outputs.
    assert!(
        plans.base_model_tp_plan.is_empty(),
        "{:?}",
        plans.base_model_tp_plan
    );
    assert_eq!(
        serde_json::to_value(&plans.base_model_ep_plan).unwrap(),
        serde_json::json!({
            "experts": "ep_dispatch_experts",
            "experts.gate_up_proj": "grouped_gemm",
            "experts.down_proj": "grouped_gemm",
        })
    );
}

#[test]
fn map_keys_of_digits_are_found_by_path() {
    #[derive(ModuleTree)]
    struct Blocks {
        blocks: std::collections::BTreeMap<String, Mlp>,
    }
    let blocks = Blocks {
        blocks: [("0".to_owned(), mlp(8))].into_iter().collect(),
    };
    let plan = plan(&blocks, ParallelConfig::new(2, 1, 1)).unwrap();
    assert_eq!(
        plan.layer("blocks.0.up_proj").unwrap().style,
        Parallel::Column
    );
}

#[test]
fn a_schema_plan_places_experts_of_any_index() {
    let plan = ParallelPlan::builder(ParallelConfig::new(1, 2, 1))
        .build(&Model::SCHEMA)
        .unwrap();
    let expert = plan.layer("layers.1.experts.5.up_proj").unwrap();
    assert_eq!(
        expert.experts,
        Some(ExpertShare::One {
            index: Some(5),
            rank: None
        })
    );
}

#[test]
fn the_example_types_plan_as_transformers_does_from_the_type_alone() {
    let fixtures = fixture_common::transformers_plans();
    let schemas: [(&str, &Schema); 4] = [
        ("llama", &parallel_models::LlamaForCausalLM::SCHEMA),
        ("mixtral", &parallel_models::MixtralForCausalLM::SCHEMA),
        ("qwen2_moe", &parallel_models::Qwen2MoeForCausalLM::SCHEMA),
        (
            "deepseek_v3",
            &parallel_models::DeepseekV3ForCausalLM::SCHEMA,
        ),
    ];
    for (name, schema) in schemas {
        let plans = ParallelPlan::builder(ParallelConfig::new(8, 16, 1))
            .build(schema)
            .unwrap()
            .transformers("model")
            .unwrap();
        let expected = &fixtures[name];
        assert_eq!(
            serde_json::to_value(&plans.base_model_tp_plan).unwrap(),
            expected["base_model_tp_plan"],
            "{name}"
        );
        assert_eq!(
            serde_json::to_value(&plans.base_model_ep_plan).unwrap(),
            expected["base_model_ep_plan"],
            "{name}"
        );
        assert_eq!(
            serde_json::to_value(&plans.tp_plan).unwrap(),
            expected["tp_plan"],
            "{name}"
        );
    }
    // DeepSpeed matches a bank as the parameter it is, and leaves it whole.
    let deepspeed = ParallelPlan::builder(ParallelConfig::new(8, 1, 1))
        .build(&parallel_models::MixtralForCausalLM::SCHEMA)
        .unwrap()
        .deepspeed_autotp()
        .unwrap();
    let specs = &deepspeed["tensor_parallel"]["partition_config"]["layer_specs"];
    let bank = specs
        .as_array()
        .unwrap()
        .iter()
        .find(|spec| {
            spec["patterns"][0]
                .as_str()
                .unwrap()
                .contains("gate_up_proj")
        })
        .unwrap();
    assert_eq!(
        bank,
        &serde_json::json!({
            "patterns": [r"^model\.layers\.\d+\.mlp\.experts\.gate_up_proj$"],
            "partition_type": "skip",
        })
    );
}
mod schema_common;

/// The full static schema of every model type of this file, pinned.
#[test]
fn schemas_are_pinned() {
    let out = schema_common::schemas(&["parallel_plan"], &[]);
    fixture_common::assert_snapshot("schemas/parallel_plan.txt", &out);
}
