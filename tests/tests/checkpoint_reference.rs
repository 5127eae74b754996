//! Header reading agrees with the reference reader, `safetensors::SafeTensors::deserialize`
//! (crate 0.8): every case of its own test suite (`safetensors/src/tensor.rs`), and the cases the
//! issue names (null metadata, FNUZ dtypes, holes, trailing bytes, duplicate keys…), are run
//! through both readers and must get the same verdict, class of error included. The one
//! deliberate departure, a duplicated key, is listed in `DEPARTURES`.

use std::io::Write as _;

use moduletree::checkpoint::{CheckpointError, read_header};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

/// A case: its name (the reference test it comes from, or the issue), the file's bytes, and the
/// verdict expected of both readers (`Ok`, or the reference's error variant).
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expected: &'static str,
}

/// Where moduletree departs from the reference on purpose: (case, reference's verdict, reason).
const DEPARTURES: &[(&str, &str, &str)] = &[
    (
        "issue: duplicate key, same entry",
        "Ok",
        "the reference reads the header into a HashMap and keeps the last entry; a header that \
         says two things of one tensor is refused",
    ),
    (
        "issue: duplicate key, different offsets",
        "InvalidOffset",
        "the reference sees a hole where the dropped entry was; moduletree names the duplicate",
    ),
];

/// A file with an 8-byte length, `header`, then `data` zero bytes.
fn file(header: &str, data: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data, 0);
    bytes
}

fn case(name: &'static str, bytes: Vec<u8>, expected: &'static str) -> Case {
    Case {
        name,
        bytes,
        expected,
    }
}

/// A raw byte string, as the reference's tests write them.
fn raw(bytes: &[u8]) -> Vec<u8> {
    bytes.to_vec()
}

fn serialized(tensors: &[(&str, Dtype, Vec<usize>)], metadata: bool) -> Vec<u8> {
    let buffers: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, dtype, shape)| vec![0; dtype.bitsize() * shape.iter().product::<usize>() / 8])
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&buffers)
        .map(|((name, dtype, shape), data)| {
            (*name, TensorView::new(*dtype, shape.clone(), data).unwrap())
        })
        .collect();
    let metadata = metadata.then(|| [("format".to_owned(), "pt".to_owned())].into());
    safetensors::serialize(views, metadata).unwrap()
}

fn cases() -> Vec<Case> {
    let test = r#"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let mut cases = vec![
        // The reference's own tests, in the order of `safetensors/src/tensor.rs`.
        case(
            "test_serialization",
            serialized(&[("attn.0", Dtype::F32, vec![1, 2, 3])], false),
            "Ok",
        ),
        case(
            "test_serialization_fp4",
            serialized(&[("attn.0", Dtype::F4, vec![1, 2, 4])], false),
            "Ok",
        ),
        case("test_empty", serialized(&[], false), "Ok"),
        case("test_empty (metadata)", serialized(&[], true), "Ok"),
        case(
            "test_serialization_forced_alignement",
            serialized(&[("attn0", Dtype::F32, vec![1, 1, 2, 3])], true),
            "Ok",
        ),
        case(
            "test_gpt2_like",
            serialized(
                &[
                    ("wte", Dtype::F32, vec![50, 8]),
                    ("wpe", Dtype::F32, vec![16, 8]),
                    ("h.0.ln_1.weight", Dtype::F32, vec![8]),
                    ("h.0.attn.c_attn.weight", Dtype::F32, vec![8, 24]),
                    ("h.0.attn.bias", Dtype::BOOL, vec![1, 1, 16, 16]),
                ],
                false,
            ),
            "Ok",
        ),
        case(
            "test_empty_shapes_allowed",
            raw(b"8\x00\x00\x00\x00\x00\x00\x00{\"test\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}\x00\x00\x00\x00"),
            "Ok",
        ),
        case("test_deserialization", file(test, 16), "Ok"),
        case("test_json_attack", json_attack(), "InvalidOffset"),
        case(
            "test_metadata_incomplete_buffer (extra data)",
            {
                let mut bytes = file(test, 16);
                bytes.extend_from_slice(b"extra_bogus_data_for_polyglot_file");
                bytes
            },
            "MetadataIncompleteBuffer",
        ),
        case(
            "test_metadata_incomplete_buffer (missing data)",
            file(test, 14),
            "MetadataIncompleteBuffer",
        ),
        case(
            "test_header_too_large",
            {
                let mut bytes = raw(b"<\x00\x00\x00\x00\xff\xff\xff");
                bytes.extend_from_slice(&file(test, 16)[8..]);
                bytes
            },
            "HeaderTooLarge",
        ),
        case("test_header_too_small", Vec::new(), "HeaderTooSmall"),
        case(
            "test_invalid_header_length",
            raw(b"<\x00\x00\x00\x00\x00\x00\x00"),
            "InvalidHeaderLength",
        ),
        case(
            "test_invalid_header_non_utf8",
            raw(b"\x01\x00\x00\x00\x00\x00\x00\x00\xff"),
            "InvalidHeader",
        ),
        case(
            "test_invalid_header_not_json",
            raw(b"\x01\x00\x00\x00\x00\x00\x00\x00{"),
            "InvalidHeaderDeserialization",
        ),
        case(
            "test_whitespace_padded_header",
            raw(b"\x06\x00\x00\x00\x00\x00\x00\x00{}\x0D\x20\x09\x0A"),
            "Ok",
        ),
        case(
            "test_whitespace_leading_padded_header",
            raw(b"\x06\x00\x00\x00\x00\x00\x00\x00\x09\x0A{}\x0D\x20"),
            "Ok",
        ),
        case(
            "test_zero_sized_tensor",
            file(
                r#"{"test":{"dtype":"I32","shape":[2,0],"data_offsets":[0, 0]}}"#,
                0,
            ),
            "Ok",
        ),
        case(
            "test_invalid_info",
            file(
                r#"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0, 4]}}"#,
                0,
            ),
            "TensorInvalidInfo",
        ),
        case(
            "test_validation_overflow (shape)",
            file(
                r#"{"test":{"dtype":"I32","shape":[2,18446744073709551614],"data_offsets":[0,16]}}"#,
                16,
            ),
            "ValidationOverflow",
        ),
        case(
            "test_validation_overflow (bits)",
            file(
                r#"{"test":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}}"#,
                16,
            ),
            "ValidationOverflow",
        ),
    ];
    // The cases the issue names, and the other ways a header goes wrong.
    let one = |dtype: &str, shape: &str, offsets: &str| {
        format!(r#"{{"a":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#)
    };
    cases.extend([
        case(
            "issue: null metadata",
            file(
                r#"{"__metadata__":null,"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                8,
            ),
            "Ok",
        ),
        case(
            "issue: metadata of strings",
            file(r#"{"__metadata__":{"format":"pt"}}"#, 0),
            "Ok",
        ),
        case(
            "issue: metadata value not a string",
            file(r#"{"__metadata__":{"format":1}}"#, 0),
            "InvalidHeaderDeserialization",
        ),
        case(
            "issue: metadata not an object",
            file(r#"{"__metadata__":"pt"}"#, 0),
            "InvalidHeaderDeserialization",
        ),
        case(
            "issue: F8_E4M3FNUZ",
            file(&one("F8_E4M3FNUZ", "[4]", "[0,4]"), 4),
            "Ok",
        ),
        case(
            "issue: F8_E5M2FNUZ",
            file(&one("F8_E5M2FNUZ", "[4]", "[0,4]"), 4),
            "Ok",
        ),
        case("C64", file(&one("C64", "[2]", "[0,16]"), 16), "Ok"),
        case(
            "unknown dtype",
            file(&one("F128", "[1]", "[0,16]"), 16),
            "InvalidHeaderDeserialization",
        ),
        case(
            "lowercase dtype",
            file(&one("f32", "[1]", "[0,4]"), 4),
            "InvalidHeaderDeserialization",
        ),
        case(
            "issue: trailing bytes",
            file(&one("F32", "[2]", "[0,8]"), 12),
            "MetadataIncompleteBuffer",
        ),
        case(
            "issue: hole between tensors",
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}"#,
                24,
            ),
            "InvalidOffset",
        ),
        case(
            "hole before the first tensor",
            file(&one("F32", "[2]", "[8,16]"), 16),
            "InvalidOffset",
        ),
        case(
            "overlap",
            file(
                r#"{"a":{"dtype":"F32","shape":[16],"data_offsets":[0,64]},"b":{"dtype":"F32","shape":[16],"data_offsets":[32,96]}}"#,
                96,
            ),
            "InvalidOffset",
        ),
        case(
            "zero-sized tensor inside another",
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}"#,
                8,
            ),
            "InvalidOffset",
        ),
        case(
            "zero-sized tensors at the ends",
            file(
                r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"c":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}"#,
                8,
            ),
            "Ok",
        ),
        case(
            "reversed offsets",
            file(&one("F32", "[0]", "[8,0]"), 8),
            "InvalidOffset",
        ),
        case(
            "misaligned F4",
            file(&one("F4", "[3]", "[0,2]"), 2),
            "MisalignedSlice",
        ),
        case(
            "issue: duplicate key, same entry",
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                8,
            ),
            "Duplicate",
        ),
        case(
            "issue: duplicate key, different offsets",
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
            ),
            "Duplicate",
        ),
        case(
            "unknown field in an entry",
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":true}}"#,
                8,
            ),
            "Ok",
        ),
        case(
            "missing shape",
            file(r#"{"a":{"dtype":"F32","data_offsets":[0,8]}}"#, 8),
            "InvalidHeaderDeserialization",
        ),
        case(
            "negative size",
            file(&one("F32", "[-2]", "[0,8]"), 8),
            "InvalidHeaderDeserialization",
        ),
        case(
            "three offsets",
            file(&one("F32", "[2]", "[0,8,8]"), 8),
            "InvalidHeaderDeserialization",
        ),
        case(
            "entry not an object",
            file(r#"{"a":[1,2]}"#, 0),
            "InvalidHeaderDeserialization",
        ),
        case(
            "header an array",
            file("[1, 2]", 0),
            "InvalidHeaderDeserialization",
        ),
        case("header a number", file("12", 0), "InvalidHeaderDeserialization"),
        case(
            "header nested 100,000 deep",
            file(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)), 0),
            "InvalidHeaderDeserialization",
        ),
        case(
            "trailing JSON after the object",
            file(r#"{} {}"#, 0),
            "InvalidHeaderDeserialization",
        ),
        case(
            "a name of 3,000 segments",
            file(
                &format!(
                    r#"{{"{}":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}}}"#,
                    vec!["a"; 3000].join(".")
                ),
                8,
            ),
            "Ok",
        ),
        case(
            "an index of 2^64 - 1",
            file(
                r#"{"layers.18446744073709551615.w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"layers.norm.w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
            ),
            "Ok",
        ),
    ]);
    cases
}

/// The reference's `test_json_attack`: ten tensors claiming the same bytes.
fn json_attack() -> Vec<u8> {
    let entries: Vec<String> = (0..10)
        .map(|i| format!(r#""weight_{i}":{{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#))
        .collect();
    file(&format!("{{{}}}", entries.join(",")), 16)
}

/// The reference's verdict: `Ok` or its error variant's name.
fn reference(bytes: &[u8]) -> String {
    match SafeTensors::deserialize(bytes) {
        Ok(_) => "Ok".to_owned(),
        Err(error) => {
            let debug = format!("{error:?}");
            debug
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or_default()
                .to_owned()
        }
    }
}

/// Our verdict, in the reference's terms.
fn ours(bytes: &[u8]) -> (String, Option<String>) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    let result = read_header(file.path());
    let message = result.as_ref().err().map(ToString::to_string);
    let verdict = match result {
        Ok(_) => "Ok",
        Err(error) => match error {
            CheckpointError::Truncated { .. } => "HeaderTooSmall",
            CheckpointError::HeaderTooLarge { .. } => "HeaderTooLarge",
            CheckpointError::HeaderBeyondFile { .. } => "InvalidHeaderLength",
            CheckpointError::InvalidUtf8 { .. } => "InvalidHeader",
            CheckpointError::Json { .. }
            | CheckpointError::NotAnObject { .. }
            | CheckpointError::InvalidTensor { .. } => "InvalidHeaderDeserialization",
            CheckpointError::DuplicateTensor { .. } => "Duplicate",
            CheckpointError::ReversedOffsets { .. }
            | CheckpointError::OverlappingTensors { .. }
            | CheckpointError::Hole { .. } => "InvalidOffset",
            CheckpointError::SizeOverflow { .. } => "ValidationOverflow",
            CheckpointError::Misaligned { .. } => "MisalignedSlice",
            CheckpointError::SizeMismatch { .. } => "TensorInvalidInfo",
            CheckpointError::OffsetsBeyondData { .. } | CheckpointError::TrailingBytes { .. } => {
                "MetadataIncompleteBuffer"
            }
            other => panic!("unexpected error for a header: {other}"),
        },
    };
    (verdict.to_owned(), message)
}

#[test]
fn every_case_agrees_with_the_reference_reader() {
    let mut problems = Vec::new();
    for case in cases() {
        let (verdict, message) = ours(&case.bytes);
        let theirs = reference(&case.bytes);
        if verdict != case.expected {
            problems.push(format!(
                "{}: expected {}, moduletree says {verdict} ({message:?})",
                case.name, case.expected
            ));
        }
        let departure = DEPARTURES.iter().find(|(name, _, _)| *name == case.name);
        match departure {
            Some((_, reference_verdict, _)) if theirs != *reference_verdict => {
                problems.push(format!(
                    "{}: listed departure, but the reference now says {theirs}",
                    case.name
                ))
            }
            Some(_) => {}
            None if theirs != case.expected => problems.push(format!(
                "{}: expected {}, the reference says {theirs}",
                case.name, case.expected
            )),
            None => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every refusal names the file, and the tensor when there is one.
#[test]
fn errors_name_the_file_and_the_tensor() {
    let bytes = file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}"#,
        24,
    );
    let mut temp = tempfile::NamedTempFile::new().unwrap();
    temp.write_all(&bytes).unwrap();
    let message = read_header(temp.path()).unwrap_err().to_string();
    assert!(
        message.starts_with(&temp.path().display().to_string()),
        "{message}"
    );
    assert!(
        message.ends_with(
            "bytes [8, 16) of the data section belong to no tensor: `b` starts at 16, but `a` ends at 8"
        ),
        "{message}"
    );
    for (header, data, text) in [
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            12,
            "4 trailing bytes: the tensors cover 8 bytes of a data section of 12",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            8,
            "tensor `a` appears twice in the header",
        ),
        (
            r#"{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#,
            16,
            "tensor `a`: unknown dtype `F128`",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}"#,
            8,
            "tensor `a`: invalid type: string \"2\", expected a sequence",
        ),
        (
            r#"{"__metadata__":{"format":1}}"#,
            0,
            "tensor `__metadata__`: expected an object of strings or null",
        ),
        (
            r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
            2,
            "tensor `a`: F4 [3] is not a whole number of bytes",
        ),
    ] {
        let mut temp = tempfile::NamedTempFile::new().unwrap();
        temp.write_all(&file(header, data)).unwrap();
        let message = read_header(temp.path()).unwrap_err().to_string();
        assert!(message.contains(text), "`{message}` does not say `{text}`");
    }
}
