//! PEFT's `adapter_config.json`: reading its target fields into a spec, and writing a resolution
//! back as fields PEFT reads.
//!
//! Reading follows PEFT's meaning (peft 0.21): `target_modules` as a list names modules by exact
//! path or dotted suffix, as a string is a regex that must match the whole path, or is
//! `"all-linear"`; `exclude_modules` takes the same two forms and wins over targets;
//! `layers_to_transform` (an integer or a list) keeps the layers whose index is listed, read after
//! the segment `layers_pattern` names when given (a name, a dotted name, or a regex, as PEFT
//! 0.21.2 reads it); `rank_pattern` and `alpha_pattern` map keys that match a trailing part of
//! the path to ranks and alphas; `target_parameters` names parameters adapted whole (expert
//! banks, `grouped_linear` leaves at the parameter's path); `modules_to_save` names modules saved
//! whole, whose subtrees no entry selects. Other fields are ignored.
//!
//! Side by side with a native spec ([`TargetSpec::parse`]): PEFT's `exclude_modules` leaves out
//! the modules it names, not what lies below them (excluding `shared_experts` keeps
//! `shared_experts.up_proj`), and that meaning is kept here; a native exclusion
//! ([`TargetSpec::with_exclusions`]) leaves out the whole subtree of a module or container it
//! names. Two extensions read what PEFT would find no module for: a `target_modules` entry
//! marked `?` (`?v_proj`) is optional, for a config shared by models of which some lack the
//! layer, and `"all-linear"` as a list entry is the shorthand.
//!
//! Where PEFT's behaviour is a defect, the spec follows the intent instead:
//!
//! - **The layer filter applies to every entry.** PEFT accepts a list entry equal to a module's
//!   full path before it consults `layers_to_transform`, so `["model.layers.1.self_attn.q_proj"]`
//!   with `layers_to_transform=[0]` still adapts layer 1. Here that entry's layer is filtered out
//!   (and the resolution warns that the entry kept nothing).
//! - **The layer index of a list at the root is found.** Without `layers_pattern`, PEFT reads the
//!   first `.<name>.<digits>.` preceded by a dot, so for `layers.1.experts.0.fc` it reads the
//!   expert index. Here the index is [`Node::layer_index`](crate::Node::layer_index): the index
//!   under the container marked `#[tree(layers)]`, else the first index segment of the path.
//! - **The most specific rank or alpha key wins.** PEFT takes the first key (in insertion order)
//!   that matches, so `{"q_proj": 2, "layers.1.self_attn.q_proj": 6}` gives layer 1's `q_proj`
//!   rank 2. Here the key that names more of the path wins (see
//!   [`Pattern::specificity`]); the first key wins only among equals.
//!
//! Keys of `rank_pattern`/`alpha_pattern` and list entries that are plain dotted names
//! (`[A-Za-z0-9_-]` between dots) are matched segment by segment; other keys are regexes with
//! PEFT's `(.*\.)?(key)$` reading. A plain key's dots therefore match only dots, where PEFT's
//! regex reading lets them match any character.
//!
//! Writing exports the selected layers' full paths, sorted (or a compact list of suffixes that
//! select exactly the same modules), plus `rank_pattern`/`alpha_pattern` keyed by full path for
//! the layers whose rank or alpha differs from the default. The JSON is byte-identical across
//! runs. A full path exported as a PEFT list entry also matches a longer path that ends with it;
//! the test models have no such pair, and [`Resolution::to_peft_compact`] checks against the
//! whole tree.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use crate::path::push_path;
use crate::target::pattern::{Pattern, Shorthand};
use crate::target::report::Resolution;
use crate::target::spec::{LayerFilter, LayerIndexSource, TargetSpec};
use crate::target::syntax::PatternError;
use crate::walk::{Walk, walk};

/// Why an `adapter_config.json` cannot be read as a target spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeftConfigError {
    /// The text is not JSON.
    #[error("adapter config is not valid JSON at line {line}, column {column}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The document is not a JSON object.
    #[error("adapter config must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// A required field is absent or null.
    #[error("adapter config has no `{field}`")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A field (or list element) of the wrong JSON type.
    #[error("`{field}` must be {expected}, found {found}")]
    WrongType {
        /// The field, with the element index for lists (`target_modules[2]`).
        field: String,
        /// What was expected.
        expected: &'static str,
        /// The JSON type (or value) found.
        found: String,
    },
    /// A list that must not be empty.
    #[error("`{field}` is an empty list")]
    EmptyList {
        /// The field.
        field: &'static str,
    },
    /// An entry, key or regex that does not parse.
    #[error("`{field}`: {source}")]
    Pattern {
        /// The field, with the element index or key.
        field: String,
        /// The parse error, with its offset.
        source: PatternError,
    },
    /// Fields that PEFT rejects together.
    #[error("`{field}` {message}")]
    Conflict {
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        message: &'static str,
    },
}

/// The JSON type of `value`, in words.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn type_name(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(number) => format!("the number {number}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn wrong(field: impl Into<String>, expected: &'static str, value: &Value) -> PeftConfigError {
    PeftConfigError::WrongType {
        field: field.into(),
        expected,
        found: type_name(value),
    }
}

fn pattern_error(field: impl Into<String>) -> impl FnOnce(PatternError) -> PeftConfigError {
    let field = field.into();
    move |source| PeftConfigError::Pattern { field, source }
}

/// Whether a PEFT name or key is a plain dotted name, matched segment by segment.
pub(crate) fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
        })
}

/// A list entry (exact path or dotted suffix) or a string (whole-path regex).
fn read_modules(field: &'static str, value: &Value) -> Result<Vec<Pattern>, PeftConfigError> {
    match value {
        // PEFT compares the string form case-insensitively (`tuners_utils.py`,
        // `_maybe_include_all_linear_layers`).
        Value::String(text)
            if field == "target_modules" && text.eq_ignore_ascii_case("all-linear") =>
        {
            Ok(vec![Pattern::shorthand(Shorthand::AllLinear)])
        }
        // PEFT reads it as a regex that excludes nothing; here it would exclude every linear.
        Value::String(text)
            if field != "target_modules" && text.eq_ignore_ascii_case("all-linear") =>
        {
            Err(PeftConfigError::Conflict {
                field,
                message: "takes module names or a regex: `all-linear` is a shorthand of `target_modules` only",
            })
        }
        // PEFT would read `all-linaer` as a regex that matches nothing: refuse the typo.
        Value::String(text) if text.starts_with("all-") => {
            Err(Pattern::parse(text).map_or_else(pattern_error(field), |_| {
                PeftConfigError::Conflict {
                    field,
                    message: "takes only the shorthand `all-linear`",
                }
            }))
        }
        Value::String(text) => Ok(vec![Pattern::regex(text).map_err(pattern_error(field))?]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(position, item)| match item {
                // In a list PEFT would look for a module of that name, which no Python attribute
                // can have: as a `target_modules` entry it means the shorthand.
                Value::String(name)
                    if field == "target_modules" && name.eq_ignore_ascii_case("all-linear") =>
                {
                    Ok(Pattern::shorthand(Shorthand::AllLinear))
                }
                Value::String(name) => {
                    Pattern::peft_name(name).map_err(pattern_error(format!("{field}[{position}]")))
                }
                other => Err(wrong(format!("{field}[{position}]"), "a string", other)),
            })
            .collect(),
        other => Err(wrong(field, "a list of strings or a string", other)),
    }
}

fn read_index(field: String, value: &Value) -> Result<usize, PeftConfigError> {
    value
        .as_u64()
        .and_then(|index| usize::try_from(index).ok())
        .ok_or_else(|| wrong(field, "a non-negative integer", value))
}

/// A rank or alpha key: a plain name matched by segments, else PEFT's `(.*\.)?(key)$` regex.
fn read_key(field: &'static str, key: &str) -> Result<Pattern, PeftConfigError> {
    let field = format!("{field}[{key:?}]");
    if is_plain(key) {
        Pattern::peft_name(key).map_err(pattern_error(field))
    } else {
        Pattern::regex(&format!("(?:.*\\.)?(?:{key})")).map_err(pattern_error(field))
    }
}

/// A rank: a positive integer that fits `u32`.
fn read_rank(value: &Value) -> Option<u32> {
    value
        .as_u64()
        .and_then(|rank| u32::try_from(rank).ok())
        .filter(|rank| *rank > 0)
}

/// A `rank_pattern` or `alpha_pattern` object: each key read by [`read_key`], each value by
/// `read`; `expected` describes the object and a value, for errors.
fn read_patterns<V>(
    field: &'static str,
    patterns: &Value,
    expected: (&'static str, &'static str),
    read: impl Fn(&Value) -> Option<V>,
) -> Result<Vec<(Pattern, V)>, PeftConfigError> {
    let Value::Object(patterns) = patterns else {
        return Err(wrong(field, expected.0, patterns));
    };
    patterns
        .iter()
        .map(|(key, value)| {
            let value =
                read(value).ok_or_else(|| wrong(format!("{field}[{key:?}]"), expected.1, value))?;
            Ok((read_key(field, key)?, value))
        })
        .collect()
}

impl TargetSpec {
    /// Reads the target fields of a PEFT `adapter_config.json` (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// A [`PeftConfigError`] naming the field (and the line and column for malformed JSON).
    ///
    /// ```
    /// use moduletree::target::TargetSpec;
    ///
    /// let spec = TargetSpec::from_peft_config(
    ///     r#"{"target_modules": ["q_proj", "v_proj"], "r": 16, "lora_alpha": 32}"#,
    /// )
    /// .unwrap();
    /// assert_eq!(spec.rank(), 16);
    /// let error = TargetSpec::from_peft_config(r#"{"target_modules": []}"#).unwrap_err();
    /// assert_eq!(error.to_string(), "`target_modules` is an empty list");
    /// ```
    pub fn from_peft_config(json: &str) -> Result<TargetSpec, PeftConfigError> {
        let value: Value = serde_json::from_str(json).map_err(|error| PeftConfigError::Json {
            line: error.line(),
            column: error.column(),
            message: error.to_string(),
        })?;
        TargetSpec::from_peft_value(&value)
    }

    /// Reads the target fields of a parsed `adapter_config.json`.
    ///
    /// # Errors
    ///
    /// A [`PeftConfigError`] naming the field.
    pub fn from_peft_value(config: &Value) -> Result<TargetSpec, PeftConfigError> {
        let Value::Object(config) = config else {
            return Err(PeftConfigError::NotAnObject {
                found: json_kind(config),
            });
        };
        let field = |name: &str| config.get(name).filter(|value| !value.is_null());
        let targets = field("target_modules");
        let parameters = field("target_parameters").filter(|value| {
            // PEFT writes an empty list for "none".
            !value.as_array().is_some_and(Vec::is_empty)
        });
        if targets.is_none() && parameters.is_none() {
            return Err(PeftConfigError::MissingField {
                field: "target_modules",
            });
        }
        // An empty `target_modules` beside `target_parameters` means "parameters only": PEFT's
        // documented way to adapt parameters alone, and what PEFT 0.21 writes when it moves a
        // fused-expert name from `target_modules` to `target_parameters`.
        let targets_empty = targets.and_then(Value::as_array).is_some_and(Vec::is_empty);
        if targets_empty && parameters.is_none() {
            return Err(PeftConfigError::EmptyList {
                field: "target_modules",
            });
        }
        let targets = targets.filter(|_| !targets_empty);
        let mut entries = match targets {
            Some(targets) => read_modules("target_modules", targets)?,
            None => Vec::new(),
        };
        // `target_parameters` names parameters by `<module>.<parameter>`, matched exactly or as a
        // dotted suffix; in the tree, a parameter adapted whole (an expert bank) is a
        // `grouped_linear` leaf at that path. A module's own `weight` (PEFT's `all-linear` on
        // transformers 5 writes `gate.weight` for a router that is not an `nn.Linear`) is that
        // module's leaf: a 2-D weight wrapped by `ParamWrapper` takes factors as a linear does.
        if let Some(parameters) = parameters {
            let Value::Array(names) = parameters else {
                return Err(wrong(
                    "target_parameters",
                    "a list of parameter names",
                    parameters,
                ));
            };
            for (position, name) in names.iter().enumerate() {
                let field = format!("target_parameters[{position}]");
                let Value::String(name) = name else {
                    return Err(wrong(field, "a string", name));
                };
                entries.push(Pattern::peft_parameter(name).map_err(pattern_error(field))?);
            }
        }
        let targets = targets.unwrap_or(&Value::Null);
        let mut spec = TargetSpec::from_patterns(entries);
        spec.excluded_entries_warn = true;
        if let Some(exclude) = field("exclude_modules") {
            for exclusion in read_modules("exclude_modules", exclude)? {
                spec = spec.with_exclusion(exclusion);
            }
        }
        let layers = match field("layers_to_transform") {
            None => None,
            // PEFT reads an empty list as "no filter".
            Some(Value::Array(items)) if items.is_empty() => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(position, item)| {
                        read_index(format!("layers_to_transform[{position}]"), item)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(value @ Value::Number(_)) => {
                Some(vec![read_index("layers_to_transform".to_owned(), value)?])
            }
            Some(other) => {
                return Err(wrong(
                    "layers_to_transform",
                    "an integer or a list of integers",
                    other,
                ));
            }
        };
        // PEFT 0.21: an empty list or string means "any layer pattern"; otherwise each entry is
        // a dotted name or a regex (see `LayerIndexSource::After`).
        let source = match field("layers_pattern") {
            None => LayerIndexSource::Tree,
            Some(Value::String(name)) if name.is_empty() => LayerIndexSource::Tree,
            Some(Value::String(name)) => LayerIndexSource::After(vec![name.clone()]),
            Some(Value::Array(items)) if items.is_empty() => LayerIndexSource::Tree,
            Some(Value::Array(items)) => LayerIndexSource::After(
                items
                    .iter()
                    .enumerate()
                    .map(|(position, item)| match item {
                        Value::String(name) if !name.is_empty() => Ok(name.clone()),
                        other => Err(wrong(
                            format!("layers_pattern[{position}]"),
                            "a module name or a regex",
                            other,
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(other) => {
                return Err(wrong(
                    "layers_pattern",
                    "a module name or a list of names",
                    other,
                ));
            }
        };
        // PEFT refuses a pattern without indices only when the pattern is not empty.
        let pattern_given = source != LayerIndexSource::Tree;
        match layers {
            Some(indices) => {
                if targets.is_string() {
                    return Err(PeftConfigError::Conflict {
                        field: "layers_to_transform",
                        message: "cannot be used when `target_modules` is a string",
                    });
                }
                let filter =
                    LayerFilter::new(indices, source).map_err(pattern_error("layers_pattern"))?;
                spec = spec.with_layer_filter(filter);
            }
            None if pattern_given => {
                return Err(PeftConfigError::Conflict {
                    field: "layers_pattern",
                    message: "needs `layers_to_transform`",
                });
            }
            None => {}
        }
        if let Some(saved) = field("modules_to_save") {
            let Value::Array(names) = saved else {
                return Err(wrong("modules_to_save", "a list of module names", saved));
            };
            for (position, name) in names.iter().enumerate() {
                let Value::String(name) = name else {
                    return Err(wrong(
                        format!("modules_to_save[{position}]"),
                        "a string",
                        name,
                    ));
                };
                spec = spec.with_saved_module(read_key("modules_to_save", name)?);
            }
        }
        if let Some(rank) = field("r") {
            let rank = read_rank(rank).ok_or_else(|| wrong("r", "a positive integer", rank))?;
            spec = spec.with_rank(rank);
        }
        if let Some(alpha) = field("lora_alpha") {
            let value = alpha
                .as_f64()
                .ok_or_else(|| wrong("lora_alpha", "a number", alpha))?;
            spec = spec.with_alpha(value);
        }
        if let Some(patterns) = field("rank_pattern") {
            spec.rank_pattern.extend(read_patterns(
                "rank_pattern",
                patterns,
                ("an object of ranks", "a positive integer"),
                read_rank,
            )?);
        }
        if let Some(patterns) = field("alpha_pattern") {
            spec.alpha_pattern.extend(read_patterns(
                "alpha_pattern",
                patterns,
                ("an object of alphas", "a number"),
                Value::as_f64,
            )?);
        }
        Ok(spec)
    }
}

/// The target fields of an `adapter_config.json`, as written from a [`Resolution`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeftTargets {
    /// The modules to adapt: full paths, or suffixes that select exactly the same modules; sorted.
    pub target_modules: Vec<String>,
    /// The default rank.
    pub r: u32,
    /// The default alpha.
    pub lora_alpha: f64,
    /// Full path → rank, for the layers whose rank differs from `r`.
    pub rank_pattern: BTreeMap<String, u32>,
    /// Full path → alpha, for the layers whose alpha differs from `lora_alpha`.
    pub alpha_pattern: BTreeMap<String, f64>,
}

impl PeftTargets {
    /// The fields as pretty-printed JSON (keys in a fixed order, maps sorted), identical across
    /// runs.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Serializing plain strings, integers, finite floats and sorted maps cannot fail; a NaN
        // alpha is written as `null` by serde_json.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl Resolution {
    /// The selection as PEFT fields, `target_modules` as the sorted full paths.
    #[must_use]
    pub fn to_peft(&self) -> PeftTargets {
        let mut target_modules: Vec<String> = self.paths().map(str::to_owned).collect();
        target_modules.sort_unstable();
        target_modules.dedup();
        self.peft_with(target_modules)
    }

    /// The selection as PEFT fields, `target_modules` as the shortest suffixes (whole segments)
    /// that match only selected modules of `model` under PEFT's exact-or-suffix rule, sorted.
    /// `model` must be the tree this resolution came from.
    #[must_use]
    pub fn to_peft_compact<T: Walk + ?Sized>(&self, model: &T) -> PeftTargets {
        self.peft_with(compact_targets(
            model,
            self.layers.iter().map(|layer| layer.path.as_str()),
        ))
    }

    fn peft_with(&self, target_modules: Vec<String>) -> PeftTargets {
        let mut rank_pattern = BTreeMap::new();
        let mut alpha_pattern = BTreeMap::new();
        for layer in &self.layers {
            if layer.rank != self.rank {
                rank_pattern.insert(layer.path.clone(), layer.rank);
            }
            if layer.alpha.to_bits() != self.alpha.to_bits() {
                alpha_pattern.insert(layer.path.clone(), layer.alpha);
            }
        }
        PeftTargets {
            target_modules,
            r: self.rank,
            lora_alpha: self.alpha,
            rank_pattern,
            alpha_pattern,
        }
    }
}

/// The shortest suffixes (whole segments, starting with a name) of the `selected` paths that
/// match no other module of `model` under PEFT's exact-or-suffix rule, sorted and distinct; a
/// path with no such suffix stands whole.
pub(crate) fn compact_targets<'p, T: Walk + ?Sized>(
    model: &T,
    selected: impl Iterator<Item = &'p str> + Clone,
) -> Vec<String> {
    let chosen: HashSet<&str> = selected.clone().collect();
    // Every suffix of an unselected node's path is ruled out.
    let mut ruled_out: HashSet<String> = HashSet::new();
    let mut joined = String::new();
    walk(model, |node| {
        joined.clear();
        push_path(&mut joined, node.path().segments(), false);
        if node.path().is_root() || chosen.contains(joined.as_str()) {
            return;
        }
        for suffix in suffixes(&joined) {
            if !ruled_out.contains(suffix) {
                ruled_out.insert(suffix.to_owned());
            }
        }
    });
    let mut targets: Vec<String> = selected
        .map(|path| {
            suffixes(path)
                .find(|suffix| !ruled_out.contains(*suffix))
                .unwrap_or(path)
                .to_owned()
        })
        .collect();
    targets.sort_unstable();
    targets.dedup();
    targets
}

/// The trailing runs of whole segments of a joined path that begin with a name, shortest first,
/// then the whole path.
fn suffixes(path: &str) -> impl Iterator<Item = &str> {
    path.rmatch_indices('.')
        .map(move |(dot, _)| &path[dot + 1..])
        .filter(|suffix| !crate::path::is_index(suffix.split('.').next().unwrap_or_default()))
        .chain(core::iter::once(path))
}
