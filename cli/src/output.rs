//! Writing a command's output: all at once, a closed pipe (`moduletree inspect | head`) being no
//! error; and the JSON form every `inspect` takes.

use std::io::Write as _;
use std::process::ExitCode;

use serde_json::Value;

/// A command's failure, in words.
pub type Failure = Box<dyn std::error::Error>;

/// Writes `text` to stdout.
pub fn print(text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
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
