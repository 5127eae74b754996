//! Writing a command's output: all at once, a closed pipe (`moduletree inspect | head`) being no
//! error; and the JSON form every `inspect` takes.

use std::borrow::Cow;
use std::io::Write as _;
use std::process::ExitCode;

use serde_json::Value;

/// A command's failure, in words.
pub type Failure = Box<dyn std::error::Error>;

/// `text` with its control characters other than line breaks and tabs escaped as Rust writes
/// them (`\u{1b}`): names read from a file (a tensor's, a shard's) reach the terminal as text,
/// never as commands to it.
pub fn printable(text: &str) -> Cow<'_, str> {
    let is_unsafe = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            safe.extend(c.escape_default());
        } else {
            safe.push(c);
        }
    }
    Cow::Owned(safe)
}

/// Writes `text` to stdout, its control characters escaped (see [`printable`]).
pub fn print(text: &str) -> ExitCode {
    match std::io::stdout()
        .lock()
        .write_all(printable(text).as_bytes())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `value` pretty-printed with a final newline.
pub fn json(value: &Value) -> String {
    format!("{value:#}\n")
}

/// A report whose answer is "no", printed on stdout with exit status 1.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}
