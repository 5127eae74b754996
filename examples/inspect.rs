//! Shows the module tree of a model without building it: of a registered type, from its static
//! schema, or of a checkpoint, from its safetensors headers alone.
//!
//! ```sh
//! cargo run --example inspect                          # the registered model types
//! cargo run --example inspect -- DeepseekV3ForCausalLm # a type's tree, targets and experts
//! cargo run --example inspect -- --checkpoint model.safetensors.index.json
//! cargo run --example inspect -- --json LlamaForCausalLm
//! ```

mod models;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use moduletree::checkpoint::Checkpoint;
use moduletree::display::Summary;
use moduletree::registry;

const USAGE: &str = "usage: inspect [--json] [NAME | --checkpoint FILE]";

enum Request {
    List,
    Type(String),
    Checkpoint(String),
}

fn main() -> ExitCode {
    let mut json = false;
    let mut request = Request::List;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--checkpoint" => match args.next() {
                Some(file) => request = Request::Checkpoint(file),
                None => return usage("`--checkpoint` needs a file"),
            },
            "-h" | "--help" => return output(format!("{USAGE}\n")),
            flag if flag.starts_with('-') => return usage(&format!("unknown flag `{flag}`")),
            name => request = Request::Type(name.to_owned()),
        }
    }
    match request {
        Request::List => output(list()),
        Request::Type(name) => match registry::find_one(&name) {
            Ok(registration) => {
                let summary = Summary::of(registration.schema);
                let title = format!("{} ({})", registration.name, registration.module_path);
                output(render(&title, &summary, json))
            }
            Err(error) => fail(&error),
        },
        Request::Checkpoint(file) => match Checkpoint::open(&file) {
            Ok(checkpoint) => {
                let title = format!(
                    "{file}: {} tensors in {} file(s)",
                    checkpoint.tensors().len(),
                    checkpoint.files().len()
                );
                output(render(&title, &checkpoint.summary(), json))
            }
            Err(error) => fail(&error),
        },
    }
}

/// The top-level model types with their module and target count, then every other type.
fn list() -> String {
    let top = registry::top_level();
    let mut text = String::from("model types:\n");
    for registration in &top {
        let linear = moduletree::find_all_linear_modules(registration.schema).len();
        let _ = writeln!(
            text,
            "  {:<28} {:<32} {linear} linear targets",
            registration.name, registration.module_path
        );
    }
    let others: Vec<&str> = registry::types()
        .into_iter()
        .filter(|registration| !top.iter().any(|model| std::ptr::eq(*model, *registration)))
        .map(|registration| registration.name)
        .collect();
    let _ = writeln!(text, "blocks and layers: {}", others.join(", "));
    text
}

/// The summary under a title line, or, for tools, one JSON object with a `title` key.
fn render(title: &str, summary: &Summary, json: bool) -> String {
    if json {
        let mut value = summary.to_json();
        if let Some(object) = value.as_object_mut() {
            object.insert("title".to_owned(), title.into());
        }
        format!("{value:#}\n")
    } else {
        format!("{title}\n\n{summary}")
    }
}

/// Writes the whole output at once; a closed pipe (`inspect | head`) is not an error.
fn output(text: String) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("error: {problem}\n{USAGE}");
    ExitCode::from(2)
}

fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
