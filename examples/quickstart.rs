//! A small Mixtral-like model: its module tree, its LoRA targets, its expert layers, and a
//! target spec checked at compile time.
//!
//! Run it with `cargo run --example quickstart`.

use moduletree::ModuleTree;

/// A dense projection `[out, in]`. `#[layer]` makes it a leaf; `is_expert` is its run-time flag.
#[derive(ModuleTree)]
#[layer(kind = "linear")]
struct Linear {
    shape: [usize; 2],
    #[layer(expert_flag)]
    is_expert: bool,
}

#[derive(ModuleTree)]
#[layer(kind = "embedding")]
struct Embedding {
    shape: [usize; 2],
}

#[derive(ModuleTree)]
#[layer(kind = "norm")]
struct RmsNorm;

#[derive(ModuleTree)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
}

/// One expert: `w1` (gate), `w2` (down), `w3` (up), as HuggingFace names them.
#[derive(ModuleTree)]
struct Expert {
    w1: Linear,
    w2: Linear,
    w3: Linear,
}

#[derive(ModuleTree)]
struct SparseMoe {
    #[layer(kind = "router")]
    gate: Linear,
    #[expert]
    experts: Vec<Expert>,
}

#[derive(ModuleTree)]
struct DecoderLayer {
    self_attn: Attention,
    block_sparse_moe: SparseMoe,
    input_layernorm: RmsNorm,
}

#[derive(ModuleTree)]
struct Model {
    embed_tokens: Embedding,
    #[tree(layers)]
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
}

#[derive(ModuleTree)]
struct MixtralForCausalLm {
    model: Model,
    #[layer(kind = "linear", head)]
    lm_head: Linear,
}

fn linear(input: usize, output: usize) -> Linear {
    Linear {
        shape: [output, input],
        is_expert: false,
    }
}

fn mixtral(layers: usize, experts: usize) -> MixtralForCausalLm {
    let (hidden, vocab) = (8, 32);
    let expert = || Expert {
        w1: linear(hidden, 2 * hidden),
        w2: linear(2 * hidden, hidden),
        w3: linear(hidden, 2 * hidden),
    };
    let layer = || DecoderLayer {
        self_attn: Attention {
            q_proj: linear(hidden, hidden),
            k_proj: linear(hidden, hidden),
            v_proj: linear(hidden, hidden),
            o_proj: linear(hidden, hidden),
        },
        block_sparse_moe: SparseMoe {
            gate: linear(hidden, experts),
            experts: (0..experts).map(|_| expert()).collect(),
        },
        input_layernorm: RmsNorm,
    };
    MixtralForCausalLm {
        model: Model {
            embed_tokens: Embedding {
                shape: [vocab, hidden],
            },
            layers: (0..layers).map(|_| layer()).collect(),
            norm: RmsNorm,
        },
        lm_head: linear(hidden, vocab),
    }
}

fn main() {
    let mut model = mixtral(2, 2);

    // Printed like PyTorch's `print(model)`; runs of identical layers fold into one line.
    println!("module tree (as PyTorch's print(model); identical layers fold into one line):");
    print!("{}", moduletree::display::Tree::of(&model));

    println!();
    println!(
        "find_all_linear_modules, the PEFT names of the linear layers (no head, no router): {:?}",
        moduletree::find_all_linear_modules(&model)
    );
    println!(
        "find_all_embedding_modules: {:?}",
        moduletree::find_all_embedding_modules(&model)
    );
    println!(
        "find_all_router_modules: {:?}",
        moduletree::find_all_router_modules(&model)
    );

    println!();
    println!("set_linear_is_expert, the layers it marked as routed experts:");
    for path in moduletree::set_linear_is_expert(&mut model) {
        println!("  {path}");
    }

    // A node downcasts to its layer type: count the weights of the linear and embedding layers.
    let mut weights = 0;
    moduletree::walk(&model, |node| {
        if let Some(linear) = node.downcast_ref::<Linear>() {
            weights += linear.shape[0] * linear.shape[1];
        } else if let Some(embedding) = node.downcast_ref::<Embedding>() {
            weights += embedding.shape[0] * embedding.shape[1];
        }
    });
    println!("weights of the linear and embedding layers, read by downcasting nodes: {weights}");

    // A LoRA target spec, checked against the type at compile time: a typo such as "q_prj"
    // fails the build. At run time it resolves to the matched layers, in walk order.
    let spec = moduletree::targets!(MixtralForCausalLm: "q_proj", "v_proj", "experts.<>.w1");
    match spec.with_layers([1]).resolve(&model) {
        Ok(resolution) => {
            println!();
            println!(
                "targets!(\"q_proj\", \"v_proj\", \"experts.<>.w1\"), checked at compile time, in layer 1:"
            );
            for path in resolution.paths() {
                println!("  {path}");
            }
            // What deserves a look (an exclusion that excluded nothing, an entry that also
            // matched modules, ...) is in one place, and an error under `.strict(true)`.
            if resolution.warnings().is_empty() {
                println!("warnings of the resolution: none");
            }
            for warning in resolution.warnings() {
                println!("warning: {warning}");
            }
        }
        Err(error) => eprintln!("{error}"),
    }
}
