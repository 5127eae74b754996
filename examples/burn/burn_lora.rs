//! LoRA on a small transformer in burn, targeted by path and saved in PEFT's format.
//!
//! The model derives burn's `Module` and `ModuleTree` side by side. A compile-checked target
//! spec (`all-linear`, the head excluded by `#[layer(head)]`, the MLP at a lower rank) is resolved
//! against it, turned into burn's own LoRA adapters, trained for a few steps on a synthetic
//! next-token task on the CPU, and saved as `adapter_config.json` + `adapter_model.safetensors`.
//! The saved adapter is then merged into a copy of the base model to show it reproduces the
//! trained model.
//!
//! ```text
//! cargo run -p moduletree-burn-examples --example burn_lora [OUTPUT_DIR]
//! ```

use std::path::PathBuf;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use moduletree::ModuleTree;
use moduletree::burn::{LoadMode, LoraConfig, LoraPlan, load_peft_adapter, save_peft_adapter};
use moduletree::peft::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};

const VOCAB: usize = 32;
const HIDDEN: usize = 32;
const HEADS: usize = 4;
const FFN: usize = 64;
const LAYERS: usize = 2;
const SEQ: usize = 12;
const BATCH: usize = 8;

#[derive(Module, ModuleTree, Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    #[module(skip)]
    heads: usize,
}

#[derive(Module, ModuleTree, Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

#[derive(Module, ModuleTree, Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

#[derive(Module, ModuleTree, Debug)]
struct TinyLm {
    embed_tokens: Embedding,
    #[tree(layers)]
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    #[layer(kind = "linear", head)]
    lm_head: Linear,
}

impl Attention {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let head_dim = hidden / self.heads;
        let split = |t: Tensor<3>| {
            t.reshape([batch, seq, self.heads, head_dim])
                .swap_dims(1, 2)
        };
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        #[allow(clippy::cast_precision_loss, reason = "a head dimension is small")]
        let scale = (head_dim as f64).sqrt().recip();
        let causal = Tensor::<2, Bool>::triu_mask([seq, seq], 1, &q.device());
        let mask = Tensor::<2>::zeros([seq, seq], &q.device())
            .mask_fill(causal, -1e9)
            .reshape([1, 1, seq, seq]);
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale) + mask;
        let mixed = softmax(scores, 3).matmul(v);
        self.o_proj
            .forward(mixed.swap_dims(1, 2).reshape([batch, seq, hidden]))
    }
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

impl TinyLm {
    fn new(device: &Device) -> Self {
        let linear = |d_in, d_out| LinearConfig::new(d_in, d_out).with_bias(false).init(device);
        let layer = || DecoderLayer {
            input_layernorm: RmsNormConfig::new(HIDDEN).init(device),
            self_attn: Attention {
                q_proj: linear(HIDDEN, HIDDEN),
                k_proj: linear(HIDDEN, HIDDEN),
                v_proj: linear(HIDDEN, HIDDEN),
                o_proj: linear(HIDDEN, HIDDEN),
                heads: HEADS,
            },
            post_attention_layernorm: RmsNormConfig::new(HIDDEN).init(device),
            mlp: Mlp {
                gate_proj: linear(HIDDEN, FFN),
                up_proj: linear(HIDDEN, FFN),
                down_proj: linear(FFN, HIDDEN),
            },
        };
        TinyLm {
            embed_tokens: EmbeddingConfig::new(VOCAB, HIDDEN).init(device),
            layers: (0..LAYERS).map(|_| layer()).collect(),
            norm: RmsNormConfig::new(HIDDEN).init(device),
            lm_head: linear(HIDDEN, VOCAB),
        }
    }

    fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let mut x = self.embed_tokens.forward(tokens);
        for layer in &self.layers {
            x = x.clone() + layer.self_attn.forward(layer.input_layernorm.forward(x));
            x = x.clone() + layer.mlp.forward(layer.post_attention_layernorm.forward(x));
        }
        self.lm_head.forward(self.norm.forward(x))
    }
}

/// Sequences that count up by a per-sequence stride: the next token is predictable.
fn batch(device: &Device) -> (Tensor<2, Int>, Tensor<1, Int>) {
    let mut inputs = Vec::with_capacity(BATCH * SEQ);
    let mut targets = Vec::with_capacity(BATCH * SEQ);
    for row in 0..BATCH {
        let (start, stride) = (row * 5 % VOCAB, 1 + row % 3);
        for position in 0..=SEQ {
            let token = i64::try_from((start + position * stride) % VOCAB).unwrap_or(0);
            if position < SEQ {
                inputs.push(token);
            }
            if position > 0 {
                targets.push(token);
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(inputs, [BATCH, SEQ]), device),
        Tensor::from_data(TensorData::new(targets, [BATCH * SEQ]), device),
    )
}

fn loss(model: &TinyLm, inputs: Tensor<2, Int>, targets: Tensor<1, Int>) -> Tensor<1> {
    let logits = model.forward(inputs).reshape([BATCH * SEQ, VOCAB]);
    CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, targets)
}

fn scalar(tensor: Tensor<1>) -> Result<f32, Box<dyn std::error::Error>> {
    let values = tensor
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|error| format!("{error:?}"))?;
    Ok(values.first().copied().unwrap_or(f32::NAN))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without a directory, the adapter goes to a temporary one, removed when the example ends.
    let temporary;
    let temporary_used = std::env::args_os().nth(1).is_none();
    let output = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => {
            temporary = tempfile::tempdir()?;
            temporary.path().to_path_buf()
        }
    };
    let device = Device::default().autodiff();
    let base = TinyLm::new(&device);

    // Checked against `TinyLm`'s schema at compile time: a typo here fails the build.
    let spec = moduletree::targets!(TinyLm: "all-linear")
        .with_rank(8)
        .with_alpha(16.0)
        .with_rank_pattern("mlp.*", 4)?;
    let resolution = spec.resolve(&base)?;
    for warning in resolution.warnings() {
        eprintln!("warning: {warning}");
    }
    println!("LoRA targets ({} layers):", resolution.layers().len());
    for layer in resolution.layers() {
        println!(
            "  {:<28} rank {} alpha {}",
            layer.path, layer.rank, layer.alpha
        );
    }

    let plan = LoraPlan::from_resolution(&base, &resolution)?;
    let mut model = plan.apply(base.clone());

    let (inputs, targets) = batch(&device);
    let mut optimizer = AdamConfig::new().init();
    let first = scalar(loss(&model, inputs.clone(), targets.clone()))?;
    for step in 1..=40 {
        let loss = loss(&model, inputs.clone(), targets.clone());
        if step % 10 == 0 {
            println!("step {step:>2}: loss {:.4}", scalar(loss.clone())?);
        }
        let gradients = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-2, model, gradients);
    }
    let last = scalar(loss(&model, inputs.clone(), targets.clone()))?;
    println!("loss {first:.4} -> {last:.4}");

    let saved = save_peft_adapter(&model, &output, &LoraConfig::new(8, 16.0))?;
    println!("saved {} adapters to {}", saved.len(), output.display());
    if temporary_used {
        println!("(a temporary directory, removed now; pass a DIR to keep the files)");
    }
    for file in [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE].map(|name| output.join(name)) {
        println!(
            "  {} ({} bytes)",
            file.display(),
            std::fs::metadata(&file)?.len()
        );
    }

    // The saved adapter, merged into the untouched base, reproduces the trained model.
    let mut merged = base;
    load_peft_adapter(&mut merged, &output, LoadMode::Merge)?;
    let reloaded = scalar(loss(&merged, inputs, targets))?;
    println!("merged from the saved files: loss {reloaded:.4}");
    if (reloaded - last).abs() > 1e-3 {
        return Err(
            format!("the saved adapter gives loss {reloaded}, the trained model {last}").into(),
        );
    }
    Ok(())
}
