//! The words for a field of `adapter_config.json` that does not read as PEFT's `LoraConfig`:
//! what the field must be, and what it is, in JSON's terms (never serde's type names).

use serde_json::Value;

use crate::target::PeftConfigError;
pub(super) use crate::target::peft::json_kind;

/// The error for `error`, met while reading `value` as a `LoraConfig`.
pub(super) fn wrong_field(
    value: &Value,
    error: &serde_path_to_error::Error<serde_json::Error>,
) -> PeftConfigError {
    let mut field = error.path().to_string();
    let name = field
        .split(['.', '['])
        .next()
        .unwrap_or_default()
        .to_owned();
    let (expected, element_ok) = expectation(&name);
    let mut at = value_at(value, error.path());
    // A list with one bad element: that element.
    if let (Some(Value::Array(items)), Some(element_ok)) = (at, element_ok)
        && let Some((index, item)) = items.iter().enumerate().find(|(_, item)| !element_ok(item))
    {
        field = format!("{field}[{index}]");
        at = Some(item);
    }
    let found = match at {
        Some(found @ (Value::Number(_) | Value::Bool(_) | Value::String(_))) => {
            format!("{} {found}", json_kind(found))
        }
        Some(found) => json_kind(found).to_owned(),
        None => error.inner().to_string(),
    };
    PeftConfigError::WrongType {
        field,
        expected,
        found,
    }
}

/// Whether one element of a list field has the right JSON type.
type ElementCheck = fn(&Value) -> bool;

/// What the field `name` of `adapter_config.json` must be, in words, and for a list field the
/// check of its elements.
fn expectation(name: &str) -> (&'static str, Option<ElementCheck>) {
    match name {
        "target_modules" | "exclude_modules" | "layers_pattern" => (
            "a list of module names, or one string (a regex or a shorthand such as \"all-linear\")",
            Some(Value::is_string),
        ),
        "layers_to_transform" => (
            "a layer index (an integer from 0), or a list of them",
            Some(Value::is_u64),
        ),
        "target_parameters" | "modules_to_save" => ("a list of names", Some(Value::is_string)),
        "rank_pattern" => (
            "an object of ranks (integers from 1) by module pattern",
            None,
        ),
        "alpha_pattern" => ("an object of alphas (numbers) by module pattern", None),
        "r" => ("a rank: an integer from 1", None),
        "lora_alpha" | "lora_dropout" => ("a number", None),
        _ => ("the type PEFT's LoraConfig gives it", None),
    }
}

/// What stands at `path` in `value`, if the path leads anywhere.
fn value_at<'v>(value: &'v Value, path: &serde_path_to_error::Path) -> Option<&'v Value> {
    let mut at = value;
    for segment in path {
        at = match segment {
            serde_path_to_error::Segment::Map { key } => at.get(key)?,
            serde_path_to_error::Segment::Seq { index } => at.get(index)?,
            _ => return None,
        };
    }
    Some(at)
}
