//! The files of a merge: each written under a temporary name and renamed into place, and the
//! companions copied beside the merged shards (see [`merge`](crate::peft::merge)).

use std::fs;
use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::peft::error::PeftError;

/// Whether `a` and `b` name one directory.
pub(super) fn same_directory(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub(super) fn io_error(file: &Path) -> impl FnOnce(std::io::Error) -> PeftError + '_ {
    move |source| PeftError::Io {
        file: file.to_owned(),
        source,
    }
}

/// Copies `from` to `to` through a temporary file, removed if the copy fails.
pub(super) fn copy(from: &Path, to: &Path) -> Result<(), PeftError> {
    through_temporary(to, |temporary| fs::copy(from, temporary).map(drop))
}

/// Writes `bytes` to `to` through a temporary file, removed if the write fails.
pub(super) fn write(to: &Path, bytes: &[u8]) -> Result<(), PeftError> {
    through_temporary(to, |temporary| fs::write(temporary, bytes))
}

fn through_temporary(
    to: &Path,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), PeftError> {
    let temporary = temporary_name(to);
    let written = fill(&temporary).and_then(|()| fs::rename(&temporary, to));
    written.map_err(|error| {
        let _ = fs::remove_file(&temporary);
        PeftError::Output {
            dir: to.parent().unwrap_or(to).to_owned(),
            problem: format!(
                "writing `{}` failed: {error}",
                to.file_name().unwrap_or_default().to_string_lossy()
            ),
        }
    })
}

fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Extensions of weight files: another checkpoint's weights beside this one (a stale
/// `model.safetensors`, Mistral's `consolidated.safetensors`, `pytorch_model.bin`) would be
/// loaded in place of the merged shards, so they are never copied.
const WEIGHT_EXTENSIONS: [&str; 9] = [
    "safetensors",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "gguf",
    "h5",
    "msgpack",
    "partial",
];

/// The files beside the checkpoint's shards (`config.json`, tokenizer files, and the index the
/// checkpoint was read from), copied; a symlink (a Hugging Face cache snapshot holds nothing
/// else) is followed. Weight files other than the shards, and any other index, are left out.
pub(super) fn copy_companions(
    source: &Path,
    out: &Path,
    checkpoint: &Checkpoint,
    written: &mut Vec<PathBuf>,
) -> Result<(), PeftError> {
    let Ok(entries) = fs::read_dir(source) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let text = name.to_string_lossy();
        let is_file = fs::metadata(&path).is_ok_and(|meta| meta.is_file());
        let is_weights = path.extension().is_some_and(|extension| {
            WEIGHT_EXTENSIONS
                .iter()
                .any(|known| extension.eq_ignore_ascii_case(known))
        });
        let is_index = text.ends_with(".index.json");
        let own_index = checkpoint
            .index()
            .is_some_and(|index| index.file_name() == Some(name.as_os_str()));
        if !is_file
            || checkpoint
                .files()
                .iter()
                .any(|file| file.file_name() == Some(name.as_os_str()))
            || is_weights
            || (is_index && !own_index)
        {
            continue;
        }
        let target = out.join(&name);
        copy(&path, &target)?;
        written.push(target);
    }
    Ok(())
}
