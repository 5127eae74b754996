//! PEFT's adapter files by name: the two file names, the `base_model.model.` prefix, and the
//! grammar of the tensor names in `adapter_model.safetensors`.
//!
//! The grammar is PEFT 0.21's `get_peft_model_state_dict` / `set_peft_model_state_dict`
//! (`peft/utils/save_and_load.py`):
//!
//! | tensor | name | shape |
//! |---|---|---|
//! | a linear's factor A | `base_model.model.<path>.lora_A.weight` | `[r, in_features]` |
//! | a linear's factor B | `base_model.model.<path>.lora_B.weight` | `[out_features, r]` |
//! | an embedding's factor A | `base_model.model.<path>.lora_embedding_A` | `[r, num_embeddings]` |
//! | an embedding's factor B | `base_model.model.<path>.lora_embedding_B` | `[embedding_dim, r]` |
//! | a parameter of a module saved whole (`modules_to_save`) | `base_model.model.<path>.<param>` | the parameter's |
//!
//! PEFT writes no adapter name; files written by other tools often carry one
//! (`lora_A.default.weight`, `lora_embedding_A.default`, `<path>.modules_to_save.default.weight`),
//! and the prefix is sometimes missing. Reading accepts all of these; writing uses PEFT's form.

/// The config file of a PEFT adapter directory.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// The weights file of a PEFT adapter directory.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The prefix PEFT puts before every module path in saved tensor names.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The adapter name PEFT uses when none is given (`adapter_name="default"` in `peft/mapping_func.py`,
/// `get_peft_model`).
pub const DEFAULT_ADAPTER: &str = "default";

/// The module names PEFT treats as a model's input and output embeddings
/// (`peft.utils.constants.EMBEDDING_LAYER_NAMES`): an adapter whose `target_modules` list names
/// one is saved with whole copies of those layers' base weights (`<path>.base_layer.weight`).
pub const EMBEDDING_LAYER_NAMES: [&str; 2] = ["embed_tokens", "lm_head"];

/// Whether the layer at `path` is named like an embedding layer of PEFT's
/// ([`EMBEDDING_LAYER_NAMES`]), whose base weight a save may copy.
#[must_use]
pub fn is_embedding_layer_name(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    EMBEDDING_LAYER_NAMES.contains(&last)
}

/// Which of a layer's two LoRA factors a tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Factor {
    /// `A`: `[r, in]` for a linear, `[r, num_embeddings]` for an embedding.
    A,
    /// `B`: `[out, r]` for a linear, `[embedding_dim, r]` for an embedding.
    B,
}

/// How PEFT names a layer's factors: a linear's or an embedding's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FactorNaming {
    /// `lora_A.weight` / `lora_B.weight`.
    Linear,
    /// `lora_embedding_A` / `lora_embedding_B`.
    Embedding,
}

impl FactorNaming {
    /// The factor's name after the module path, as PEFT writes it (no adapter name).
    #[must_use]
    pub fn suffix(self, factor: Factor) -> &'static str {
        match (self, factor) {
            (FactorNaming::Linear, Factor::A) => "lora_A.weight",
            (FactorNaming::Linear, Factor::B) => "lora_B.weight",
            (FactorNaming::Embedding, Factor::A) => "lora_embedding_A",
            (FactorNaming::Embedding, Factor::B) => "lora_embedding_B",
        }
    }
}

/// One LoRA factor's tensor name, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FactorName<'n> {
    /// The module path, without PEFT's prefix.
    pub path: &'n str,
    /// Which factor.
    pub factor: Factor,
    /// A linear's or an embedding's naming.
    pub naming: FactorNaming,
}

impl FactorName<'_> {
    /// The name PEFT saves this factor under: prefixed, without an adapter name.
    #[must_use]
    pub fn to_peft(self) -> String {
        format!(
            "{PEFT_PREFIX}{}.{}",
            self.path,
            self.naming.suffix(self.factor)
        )
    }
}

/// A tensor name of an adapter file, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterKey<'n> {
    /// A LoRA factor.
    Factor(FactorName<'n>),
    /// A parameter of a module: `<path>.<param>` (`lm_head.weight`), or PEFT's in-memory form
    /// `<path>.modules_to_save[.<adapter>].<param>`. Only a module that `modules_to_save`
    /// selects may have one.
    Parameter {
        /// The module path, without PEFT's prefix.
        path: &'n str,
        /// The parameter's name (`weight`, `bias`).
        param: &'n str,
    },
}

/// Parses `[base_model.model.]<path>.lora_A[.<adapter>].weight`, its `lora_B` twin, and
/// `[base_model.model.]<path>.lora_embedding_{A,B}[.<adapter>]`. `None` for any other name,
/// or one with an empty segment.
#[must_use]
pub fn parse_factor_name(name: &str) -> Option<FactorName<'_>> {
    match parse_key(name)? {
        AdapterKey::Factor(factor) => Some(factor),
        AdapterKey::Parameter { .. } => None,
    }
}

/// Parses any tensor name of an adapter file (see the [module docs](self)). `None` for a name
/// with an empty segment, a factor marker in a malformed position, or a single segment.
#[must_use]
pub fn parse_key(name: &str) -> Option<AdapterKey<'_>> {
    let rest = name.strip_prefix(PEFT_PREFIX).unwrap_or(name);
    if rest.split('.').any(str::is_empty) {
        return None;
    }
    let markers = ["lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"];
    let marked = rest
        .match_indices('.')
        .filter_map(|(dot, _)| {
            let after = &rest[dot + 1..];
            let (marker, tail) = after.split_once('.').unwrap_or((after, ""));
            markers
                .contains(&marker)
                .then_some((&rest[..dot], marker, tail))
        })
        .next_back();
    if let Some((path, marker, tail)) = marked {
        let naming = if marker.starts_with("lora_embedding") {
            FactorNaming::Embedding
        } else {
            FactorNaming::Linear
        };
        let tail: Vec<&str> = tail.split('.').collect();
        let well_formed = match naming {
            FactorNaming::Embedding => tail.len() == 1,
            FactorNaming::Linear => matches!(tail.as_slice(), ["weight"] | [_, "weight"]),
        };
        let factor = if marker.ends_with('A') {
            Factor::A
        } else {
            Factor::B
        };
        return well_formed.then_some(AdapterKey::Factor(FactorName {
            path,
            factor,
            naming,
        }));
    }
    // `<path>.modules_to_save[.<adapter>].<param>`: PEFT's wrapper as it sits in memory.
    if let Some(at) = rest.find(".modules_to_save.") {
        let path = &rest[..at];
        let tail = &rest[at + ".modules_to_save.".len()..];
        let param = match tail.split('.').collect::<Vec<_>>().as_slice() {
            [param] | [_, param] => *param,
            _ => return None,
        };
        return Some(AdapterKey::Parameter { path, param });
    }
    let (path, param) = rest.rsplit_once('.')?;
    Some(AdapterKey::Parameter { path, param })
}

/// The module owning a `ParamWrapper`'s factors, and how deep its wrapper is nested: PEFT wraps
/// several adapted parameters of one module inside each other, so their factors are keyed on
/// `<module>`, `<module>.base_layer`, `<module>.base_layer.base_layer`, …
/// (`peft/tuners/tuners_utils.py`, `_inject_parameters`).
///
/// ```
/// use moduletree::peft::names::parameter_owner;
///
/// assert_eq!(parameter_owner("mlp.experts.base_layer"), ("mlp.experts", 1));
/// assert_eq!(parameter_owner("mlp.experts"), ("mlp.experts", 0));
/// ```
#[must_use]
pub fn parameter_owner(path: &str) -> (&str, usize) {
    let mut module = path;
    let mut depth = 0;
    while let Some(inner) = module.strip_suffix(".base_layer") {
        module = inner;
        depth += 1;
    }
    (module, depth)
}

/// Whether `path` ends with the whole segments of `entry` (PEFT's list match: the name itself or
/// a dotted suffix), so `experts` matches `mlp.experts` but not `mlp.shared_experts`.
#[must_use]
pub fn ends_with_segments(path: &str, entry: &str) -> bool {
    path == entry
        || path
            .strip_suffix(entry)
            .is_some_and(|head| head.ends_with('.'))
}

/// The name of the other half of a pair: `lora_A` ↔ `lora_B`.
pub(crate) fn other_half(name: &str) -> String {
    for (from, to) in [
        ("lora_embedding_A", "lora_embedding_B"),
        ("lora_embedding_B", "lora_embedding_A"),
        ("lora_A", "lora_B"),
        ("lora_B", "lora_A"),
    ] {
        if let Some(at) = name.rfind(from) {
            return format!("{}{to}{}", &name[..at], &name[at + from.len()..]);
        }
    }
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_key_forms() {
        for (name, path, factor, naming) in [
            (
                "base_model.model.model.layers.0.q_proj.lora_A.weight",
                "model.layers.0.q_proj",
                Factor::A,
                FactorNaming::Linear,
            ),
            (
                "model.layers.0.q_proj.lora_B.weight",
                "model.layers.0.q_proj",
                Factor::B,
                FactorNaming::Linear,
            ),
            (
                "layers.1.up.lora_A.default.weight",
                "layers.1.up",
                Factor::A,
                FactorNaming::Linear,
            ),
            (
                "base_model.model.embed.lora_embedding_A",
                "embed",
                Factor::A,
                FactorNaming::Embedding,
            ),
            (
                "embed.lora_embedding_B.other",
                "embed",
                Factor::B,
                FactorNaming::Embedding,
            ),
        ] {
            let key = parse_factor_name(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!((key.path, key.factor, key.naming), (path, factor, naming));
            assert_eq!(parse_key(name), Some(AdapterKey::Factor(key)));
        }
        for name in [
            "lora_A",
            "model.q_proj.lora_A.bias",
            "model.q_proj.lora_A.a.b.weight",
            "model..q_proj.lora_A.weight",
        ] {
            assert!(parse_key(name).is_none(), "{name}");
        }
        for (name, path, param) in [
            ("base_model.model.lm_head.weight", "lm_head", "weight"),
            (
                "model.q_proj.lora_magnitude_vector",
                "model.q_proj",
                "lora_magnitude_vector",
            ),
            (
                "classifier.modules_to_save.default.bias",
                "classifier",
                "bias",
            ),
            (
                "base_model.model.score.modules_to_save.weight",
                "score",
                "weight",
            ),
        ] {
            assert_eq!(
                parse_key(name),
                Some(AdapterKey::Parameter { path, param }),
                "{name}"
            );
        }
        let name = FactorName {
            path: "model.embed_tokens",
            factor: Factor::B,
            naming: FactorNaming::Embedding,
        };
        assert_eq!(
            name.to_peft(),
            "base_model.model.model.embed_tokens.lora_embedding_B"
        );
    }
}
