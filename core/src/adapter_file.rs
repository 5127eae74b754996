//! PEFT's adapter files by name: the two file names, the `base_model.model.` prefix, and the
//! tensor names of LoRA factors. The candle and burn integrations both read and write through
//! this one place, so that a file one of them accepts the other accepts too.

/// The config file of a PEFT adapter directory.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// The weights file of a PEFT adapter directory.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The prefix PEFT puts before every module path in saved tensor names.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// One LoRA factor's tensor name, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FactorName<'n> {
    /// The module path, without PEFT's prefix.
    pub path: &'n str,
    /// `A` (`[r, in]`) rather than `B` (`[out, r]`).
    pub is_a: bool,
    /// An embedding's factor (`lora_embedding_A/B`) rather than a linear's (`lora_A/B.weight`).
    pub embedding: bool,
}

impl FactorName<'_> {
    /// The name PEFT saves this factor under: prefixed, without an adapter name.
    #[must_use]
    pub fn to_peft(self) -> String {
        let factor = match (self.embedding, self.is_a) {
            (false, true) => "lora_A.weight",
            (false, false) => "lora_B.weight",
            (true, true) => "lora_embedding_A",
            (true, false) => "lora_embedding_B",
        };
        format!("{PEFT_PREFIX}{}.{factor}", self.path)
    }
}

/// Parses `[base_model.model.]<path>.lora_A[.<adapter>].weight`, its `lora_B` twin, and
/// `[base_model.model.]<path>.lora_embedding_{A,B}[.<adapter>]`. `None` for any other name,
/// or one with an empty segment.
#[must_use]
pub fn parse_factor_name(name: &str) -> Option<FactorName<'_>> {
    let rest = name.strip_prefix(PEFT_PREFIX).unwrap_or(name);
    if rest.split('.').any(str::is_empty) {
        return None;
    }
    let factors = ["lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"];
    let (path, factor, tail) = rest
        .match_indices('.')
        .filter_map(|(dot, _)| {
            let after = &rest[dot + 1..];
            let (factor, tail) = after.split_once('.').unwrap_or((after, ""));
            factors
                .contains(&factor)
                .then_some((&rest[..dot], factor, tail))
        })
        .next_back()?;
    let embedding = factor.starts_with("lora_embedding");
    let tail: Vec<&str> = tail.split('.').collect();
    let well_formed = if embedding {
        tail.len() == 1
    } else {
        matches!(tail.as_slice(), ["weight"] | [_, "weight"])
    };
    well_formed.then_some(FactorName {
        path,
        is_a: factor.ends_with('A'),
        embedding,
    })
}
