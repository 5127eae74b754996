//! Writing a command's output: all at once, a closed pipe (`moduletree inspect | head`) being no
//! error; and the JSON form every `inspect` takes.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use serde_json::Value;

/// A command's failure, in words.
pub type Failure = Box<dyn std::error::Error>;

/// `text` with its control characters other than line breaks and tabs, and the bidirectional
/// controls that reorder what a terminal shows, escaped as Rust writes them (`\u{1b}`): names
/// read from a file (a tensor's, a shard's) reach the terminal as text, never as commands to it.
pub fn printable(text: &str) -> Cow<'_, str> {
    escaped(
        text,
        |c| (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c),
        rust_escape,
    )
}

/// `text` on one line: its line breaks and tabs escaped (`\n`), for a name (a target entry, a
/// layer's path) written into a report line, where [`printable`] must keep the report's own.
pub fn one_line(text: &str) -> Cow<'_, str> {
    escaped(text, |c| matches!(c, '\n' | '\r' | '\t'), rust_escape)
}

/// `text` with each character `is_unsafe` picks written by `escape`; borrowed when there is none.
fn escaped(
    text: &str,
    is_unsafe: impl Fn(char) -> bool,
    escape: impl Fn(char, &mut String),
) -> Cow<'_, str> {
    if !text.contains(&is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            escape(c, &mut safe);
        } else {
            safe.push(c);
        }
    }
    Cow::Owned(safe)
}

/// `c` as Rust escapes it (`\u{1b}`, `\n`).
fn rust_escape(c: char, out: &mut String) {
    out.extend(c.escape_default());
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

/// `value` pretty-printed with a final newline. serde_json escapes the control characters below
/// U+0020 only; DEL, the C1 controls and the bidirectional controls are escaped here too, as
/// JSON writes them (`\u007f`), so that the text is both valid JSON and safe to print.
pub fn json(value: &Value) -> String {
    let text = format!("{value:#}\n");
    escaped(
        &text,
        |c| (c.is_control() && c > '\u{1f}') || is_bidi_control(c),
        |c, out| {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        },
    )
    .into_owned()
}

/// The invisible Unicode characters that change how text is shown: the bidirectional marks,
/// embeddings, overrides and isolates (U+061C, U+200E–F, U+202A–E, U+2066–9), which make a
/// terminal show text in another order than it is; the line and paragraph separators (U+2028–9);
/// and the zero-width space and byte-order mark (U+200B, U+FEFF), which hide a difference.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'
            | '\u{200e}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
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
