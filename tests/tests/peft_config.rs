//! Reading `adapter_config.json` as PEFT's `LoraConfig`: each kind of bad file gets an error that
//! says what the field should be and what it is, in JSON's words, never serde's type names.

use moduletree::peft::{Adapter, LoraConfig};

fn error_of(json: &str) -> String {
    LoraConfig::from_json(json).unwrap_err().to_string()
}

#[test]
fn a_document_that_is_not_an_object_is_told_from_text_that_is_not_json() {
    assert_eq!(
        error_of("[1, 2]"),
        "adapter config must be a JSON object, found a list"
    );
    assert!(
        error_of("{\"r\": 8,").starts_with("adapter config is not valid JSON at line 1"),
        "{}",
        error_of("{\"r\": 8,")
    );
}

#[test]
fn a_repeated_key_keeps_its_last_value_as_pythons_json_does() {
    let config =
        LoraConfig::from_json(r#"{"r": 4, "r": 16, "target_modules": ["q_proj"]}"#).unwrap();
    assert_eq!(config.r, 16);
}

#[test]
fn a_field_of_the_wrong_type_names_what_it_must_be_and_what_it_is() {
    for (json, expected) in [
        (
            r#"{"target_modules": 5}"#,
            "`target_modules` must be a list of module names, or one string (a regex or a shorthand such as \"all-linear\"), found a number 5",
        ),
        (
            r#"{"target_modules": ["q_proj", 7]}"#,
            "`target_modules[1]` must be a list of module names, or one string (a regex or a shorthand such as \"all-linear\"), found a number 7",
        ),
        (
            r#"{"target_modules": ["q_proj"], "layers_to_transform": -1}"#,
            "`layers_to_transform` must be a layer index (an integer from 0), or a list of them, found a number -1",
        ),
        (
            r#"{"target_modules": ["q_proj"], "layers_to_transform": [0, -1]}"#,
            "`layers_to_transform[1]` must be a layer index (an integer from 0), or a list of them, found a number -1",
        ),
        (
            r#"{"target_modules": ["q_proj"], "r": "8"}"#,
            "`r` must be a rank: an integer from 1, found a string \"8\"",
        ),
        (
            r#"{"target_modules": ["q_proj"], "lora_alpha": null}"#,
            "`lora_alpha` must be a number, found null",
        ),
    ] {
        let error = error_of(json);
        assert_eq!(error, expected, "{json}");
        assert!(!error.contains("untagged"), "{error}");
    }
}

#[test]
fn a_config_that_is_not_utf8_says_where() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("adapter_config.json"),
        b"{\n  \"r\": 8,\n  \"target_modules\": [\"q_\xffproj\"]\n}\n",
    )
    .unwrap();
    let error = Adapter::read(dir.path()).unwrap_err().to_string();
    assert!(error.contains("adapter_config.json"), "{error}");
    assert!(
        error.contains("at line 3, column 25: byte 36 is not UTF-8"),
        "{error}"
    );
    assert!(!error.contains("cannot access"), "{error}");
}

/// A broken `adapter_model.safetensors` is reported in the header reader's words, naming the
/// tensor whose bytes are missing, as inspection reports it.
#[test]
fn a_truncated_weights_file_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("adapter_config.json"),
        r#"{"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}"#,
    )
    .unwrap();
    let data = vec![0_u8; 2 * 4 * 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 4], &data).unwrap();
    let mut bytes =
        safetensors::serialize([("base_model.model.q_proj.lora_A.weight", view)], None).unwrap();
    bytes.truncate(bytes.len() - 4);
    std::fs::write(dir.path().join("adapter_model.safetensors"), bytes).unwrap();
    let error = Adapter::read(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("adapter_model.safetensors")
            && error.contains("base_model.model.q_proj.lora_A.weight"),
        "{error}"
    );
}

/// An alpha beyond f32's range, where the scale is applied, is refused: it would merge to
/// infinities and unmerge to NaN.
#[test]
fn an_alpha_beyond_f32_is_refused() {
    for json in [
        r#"{"r": 1, "lora_alpha": 1e308, "target_modules": ["q_proj"]}"#,
        r#"{"r": 1, "lora_alpha": 8, "alpha_pattern": {"q_proj": -1e39}, "target_modules": ["q_proj"]}"#,
    ] {
        let config = LoraConfig::from_json(json).unwrap();
        let error = format!("{:?}", config.validate().unwrap_err());
        assert!(
            error.contains("alpha") && error.contains("f32's range"),
            "{error}"
        );
    }
    let config =
        LoraConfig::from_json(r#"{"r": 1, "lora_alpha": 3e38, "target_modules": ["q_proj"]}"#)
            .unwrap();
    assert!(config.validate().is_ok());
}
