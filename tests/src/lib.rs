//! Model shapes shared by the integration tests and the benchmarks, written the way HuggingFace
//! names them (`#[tree(rename)]` where Rust names differ): a Llama-like dense model, a
//! Mixtral-like MoE, a Qwen2-MoE-like model mixing dense and sparse layers through an enum, and a
//! DeepSeek-V3-like model with MLA projections whose experts are either a `Vec` or one fused
//! `grouped_linear` leaf.
//!
//! The layers hold shapes, not tensors: the tree is what the tests are about.

pub mod models;
