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
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            flag if flag.starts_with('-') => return usage(&format!("unknown flag `{flag}`")),
            name => request = Request::Type(name.to_owned()),
        }
    }
    match request {
        Request::List => {
            list();
            ExitCode::SUCCESS
        }
        Request::Type(name) => match registry::find_one(&name) {
            Ok(registration) => {
                let summary = Summary::of(registration.schema);
                let title = format!("{} ({})", registration.name, registration.module_path);
                print(&title, &summary, json);
                ExitCode::SUCCESS
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
                print(&title, &checkpoint.summary(), json);
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        },
    }
}

fn list() {
    println!("model types:");
    for registration in registry::top_level() {
        let linear = moduletree::find_all_linear_modules(registration.schema).len();
        println!(
            "  {:<28} {:<32} {linear} linear targets",
            registration.name, registration.module_path
        );
    }
    let others: Vec<&str> = registry::types()
        .into_iter()
        .filter(|registration| {
            !registry::top_level()
                .iter()
                .any(|top| top.full_name() == registration.full_name())
        })
        .map(|registration| registration.name)
        .collect();
    println!("blocks and layers: {}", others.join(", "));
}

/// Prints the summary under a title line, or, for tools, one JSON object with a `title` key.
fn print(title: &str, summary: &Summary, json: bool) {
    if json {
        let mut value = summary.to_json();
        if let Some(object) = value.as_object_mut() {
            object.insert("title".to_owned(), title.into());
        }
        println!("{value:#}");
    } else {
        println!("{title}\n");
        print!("{summary}");
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
