//! A model with one layer of every style: a vocabulary-parallel embedding, a packed `q/k/v`-like
//! projection of unequal parts feeding a packed row projection, a column/row pair, a row layer
//! that splits its own input, a replicated layer and a gathered head.

use candle_core::Tensor;
use moduletree::ModuleTree;
use moduletree::candle::{LoraEmbedding, LoraLinear};
use moduletree::parallel::ParallelPlan;

use super::{Exec, HIDDEN, Leaves, Reference, Sim, VOCAB, Values, map, zip};

#[derive(ModuleTree)]
pub struct Toy {
    #[layer(kind = "embedding", parallel = "vocab")]
    pub embed: LoraEmbedding,
    #[layer(kind = "linear", parallel = "packed_column", parts = [2, 1, 1])]
    pub qkv: LoraLinear,
    #[layer(kind = "linear", parallel = "packed_row", parts = [2, 1, 1])]
    pub proj: LoraLinear,
    #[layer(kind = "linear", parallel = "column")]
    pub fc: LoraLinear,
    #[layer(kind = "linear", parallel = "row")]
    pub fc2: LoraLinear,
    #[layer(kind = "linear", parallel = "row_split")]
    pub mix: LoraLinear,
    #[layer(kind = "linear", parallel = "replicated")]
    pub extra: LoraLinear,
    #[layer(kind = "linear", head, parallel = "column_gather")]
    pub head: LoraLinear,
}

pub fn build() -> Toy {
    let mut values = Values::new(99);
    Toy {
        embed: values.embedding(VOCAB, HIDDEN),
        qkv: values.linear(32, HIDDEN),
        proj: values.linear(HIDDEN, 32),
        fc: values.linear(32, HIDDEN),
        fc2: values.linear(HIDDEN, 32),
        mix: values.linear(HIDDEN, HIDDEN),
        extra: values.linear(HIDDEN, HIDDEN),
        head: values.linear(VOCAB, HIDDEN),
    }
}

fn forward(exec: &dyn Exec, tokens: &[u32]) -> Vec<Vec<f32>> {
    let silu = |x: &Tensor| candle_nn::ops::silu(x).unwrap();
    let add = |x: &Tensor, y: &Tensor| (x + y).unwrap();
    let mut x = exec.embed("embed", tokens);
    let hidden = map(&exec.linear("qkv", &x), silu);
    x = zip(&x, &exec.linear("proj", &hidden), add);
    let hidden = map(&exec.linear("fc", &x), |x| x.gelu().unwrap());
    x = zip(&x, &exec.linear("fc2", &hidden), add);
    x = zip(&x, &exec.linear("mix", &x), add);
    x = zip(&x, &exec.linear("extra", &x), add);
    let logits = exec.linear("head", &x);
    logits[0].to_vec2::<f32>().unwrap()
}

pub fn reference_logits(model: &Toy, tokens: &[u32]) -> Vec<Vec<f32>> {
    forward(&Reference(Leaves::of(model)), tokens)
}

pub fn sim_logits(model: &Toy, plan: &ParallelPlan, tokens: &[u32]) -> Vec<Vec<f32>> {
    forward(&Sim::of(model, plan), tokens)
}
