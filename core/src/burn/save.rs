//! Writing a burn model's adapters as a PEFT adapter directory: burn's factors turned into
//! PEFT's layout; the files and the config are [`write_adapter`]'s.

use std::path::Path;

use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};

use crate::ModuleTree;
use crate::burn::bank::ExpertBank;
use crate::burn::peft::{ADAPTER, weight_ref};
use crate::path::push_path;
use crate::peft::names::{FactorNaming, is_embedding_layer_name};
use crate::peft::per_expert::save_per_expert;
use crate::peft::{
    AdaptedLayer, LoraConfig, PeftError, PerExpertNames, RawTensor, SavedFactors, SavedParameter,
    alpha_for, saved_module_layers, write_adapter,
};
use crate::walk::walk;

/// Writes the LoRA adapters of `model`'s burn `Linear` and `Embedding` layers to `dir` in PEFT's
/// format (see [`write_adapter`] for the files and the config written), with the parameters of
/// the layers inside `config`'s `modules_to_save`. burn keeps a scale, not an alpha: the alpha
/// written is `scale · r` (`scale · √r` when `config.use_rslora`). Tensors are written as F32.
///
/// # Errors
///
/// As [`write_adapter`]; [`PeftError::Tensor`] when a tensor cannot be read.
pub fn save_peft_adapter<M: ModuleTree + ?Sized>(
    model: &M,
    dir: impl AsRef<Path>,
    config: &LoraConfig,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    save(model, dir.as_ref(), config)
}

/// Saves the adapters like [`save_peft_adapter`], with every fused expert bank's factors split
/// into per-expert factors under transformers 4's names (`names`, e.g.
/// [`PerExpertNames::MIXTRAL`]): the file PEFT loads on a transformers 4 model with per-expert
/// linears (see [`Adapter::to_per_expert`](crate::peft::Adapter::to_per_expert)). `model` is
/// borrowed mutably only to learn which layers are shared (behind an `Arc`); nothing changes.
///
/// # Errors
///
/// As [`save_peft_adapter`] and [`Adapter::to_per_expert`](crate::peft::Adapter::to_per_expert).
pub fn save_peft_adapter_per_expert<M: ModuleTree + ?Sized>(
    model: &mut M,
    dir: impl AsRef<Path>,
    config: &LoraConfig,
    names: PerExpertNames,
) -> Result<(), PeftError> {
    let layers = crate::burn::peft::survey(model);
    save_per_expert(&*model, &layers, dir.as_ref(), names, |scratch| {
        save(&*model, scratch, config)
    })
}

fn save<M: ModuleTree + ?Sized>(
    model: &M,
    dir: &Path,
    config: &LoraConfig,
) -> Result<Vec<AdaptedLayer>, PeftError> {
    let saved_layers = saved_module_layers(model, config, dir)?;
    let mut factors = Vec::new();
    let mut parameters = Vec::new();
    let mut failure = None;
    let mut joined = String::new();
    walk(model, |node| {
        if let Some(bank) = node.downcast_ref::<ExpertBank>() {
            if let Some(lora) = &bank.lora {
                let path = node.path().to_string();
                // The fields are public: factors that do not fit the bank are refused here, not
                // written for a loader to refuse.
                let experts = bank.num_experts();
                let [a_rows, a_cols] = lora.a.shape().dims();
                let [b_rows, b_cols] = lora.b.shape().dims();
                let rank = a_rows / experts.max(1);
                let fits = lora.experts == experts
                    && rank > 0
                    && a_rows == rank * experts
                    && a_cols == bank.in_features()
                    && b_rows == bank.out_features()
                    && b_cols == a_rows;
                if !fits {
                    failure.get_or_insert(PeftError::Tensor {
                        path,
                        message: format!(
                            "the bank's LoRA factors do not fit it: A is [{a_rows}, {a_cols}] and B [{b_rows}, {b_cols}] for {} experts; the bank of {experts} experts [{}, {}] expects A [{experts}·r, {}] and B [{}, r·{experts}], r ≥ 1",
                            lora.experts,
                            bank.out_features(),
                            bank.in_features(),
                            bank.in_features(),
                            bank.out_features()
                        ),
                    });
                    return;
                }
                // PEFT's layout is the bank's own: A [E·r, in], B [out, r·E].
                match (
                    raw_of(lora.a.val().into_data()),
                    raw_of(lora.b.val().into_data()),
                ) {
                    (Ok(a), Ok(b)) => {
                        let rank = u32::try_from(lora.rank()).unwrap_or(u32::MAX);
                        factors.push(SavedFactors {
                            path,
                            naming: FactorNaming::Linear,
                            rank,
                            alpha: alpha_for(lora.scale, rank, config.use_rslora),
                            rslora: config.use_rslora,
                            a,
                            b,
                            bank: true,
                            base: None,
                        });
                    }
                    (Err(message), _) | (_, Err(message)) => {
                        failure.get_or_insert(PeftError::Tensor { path, message });
                    }
                }
            }
            return;
        }
        let Some((weight, naming, _)) = weight_ref(node) else {
            return;
        };
        joined.clear();
        push_path(&mut joined, node.path().segments(), false);
        let error = |message: String| PeftError::Tensor {
            path: joined.clone(),
            message,
        };
        if saved_layers.contains(joined.as_str()) {
            let mut stored = vec![("weight", peft_matrix(weight.val(), naming))];
            if let Some(linear) = node.downcast_ref::<Linear>()
                && let Some(bias) = &linear.bias
            {
                stored.push(("bias", raw_of(bias.val().into_data())));
            }
            for (param, tensor) in stored {
                match tensor {
                    Ok(tensor) => parameters.push(SavedParameter {
                        path: joined.clone(),
                        param: param.to_owned(),
                        tensor,
                    }),
                    Err(message) => failure = Some(error(message)),
                }
            }
            return;
        }
        let Some(adapter) = weight.adapter() else {
            return;
        };
        // PEFT's A = aᵀ ([r, in]) and B = bᵀ ([out, r]).
        let a = raw_of(adapter.a.val().transpose().into_data());
        let b = raw_of(adapter.b.val().transpose().into_data());
        let base = is_embedding_layer_name(&joined)
            .then(|| peft_matrix(weight.base(), naming))
            .transpose();
        match (a, b, base) {
            (Ok(a), Ok(b), Ok(base)) => {
                let rank = u32::try_from(a.shape[0]).unwrap_or(u32::MAX);
                factors.push(SavedFactors {
                    path: joined.clone(),
                    naming,
                    rank,
                    alpha: alpha_for(adapter.scale, rank, config.use_rslora),
                    rslora: config.use_rslora,
                    a,
                    b,
                    bank: false,
                    base,
                });
            }
            (Err(message), ..) | (_, Err(message), _) | (.., Err(message)) => {
                failure = Some(error(message));
            }
        }
    });
    if let Some(error) = failure {
        return Err(error);
    }
    write_adapter(model, dir, config, &factors, &parameters, ADAPTER)
}

/// A burn weight in PEFT's layout: a linear's transposed to `[out, in]`, a table as it is.
fn peft_matrix(weight: Tensor<2>, naming: FactorNaming) -> Result<RawTensor, String> {
    match naming {
        FactorNaming::Linear => raw_of(weight.transpose().into_data()),
        FactorNaming::Embedding => raw_of(weight.into_data()),
    }
}

fn raw_of(data: TensorData) -> Result<RawTensor, String> {
    let shape = data.shape().to_vec();
    let values = data
        .try_into_vec_as::<f32>()
        .map_err(|error| format!("{error:?}"))?;
    Ok(RawTensor::from_f32(shape, &values))
}
