//! `moduletree inspect`: the known model types, a type's tree and targets, a checkpoint's (from
//! its headers, or from its index alone), and what target entries select in either.

use std::fmt::Write as _;
use std::path::Path;

use moduletree::checkpoint::Checkpoint;
use moduletree::display::Summary;
use moduletree::registry::{self, Registration};
use moduletree::target::{Resolution, TargetSpec};
use moduletree::{Schema, Walk};
use serde_json::{Value, json};

use crate::InspectArgs;
use crate::output::{Failure, json, one_line};

pub fn run(args: &InspectArgs) -> Result<String, Failure> {
    if let Some(adapter) = &args.adapter {
        return crate::adapter::run(adapter, args);
    }
    if let Some(path) = &args.checkpoint {
        let checkpoint = Checkpoint::open(path)?;
        return checkpoint_report(path, &checkpoint, args);
    }
    match &args.name {
        Some(name) => {
            let registration = registry::find_one(name)?;
            type_report(registration, args)
        }
        None => Ok(list(args.json)),
    }
}

/// The top-level model types with their module path and linear-target count, then every other
/// registered type.
fn list(as_json: bool) -> String {
    let top = registry::top_level();
    let others: Vec<&str> = registry::types()
        .into_iter()
        .filter(|registration| !top.iter().any(|model| std::ptr::eq(*model, *registration)))
        .map(|registration| registration.name)
        .collect();
    if as_json {
        let models: Vec<Value> = top
            .iter()
            .map(|registration| {
                json!({
                    "name": registration.name,
                    "module_path": registration.module_path,
                    "linear_targets": moduletree::find_all_linear_modules(registration.schema),
                })
            })
            .collect();
        return json(&json!({ "model_types": models, "blocks_and_layers": others }));
    }
    let mut text = String::from("model types:\n");
    for registration in &top {
        let linear = moduletree::find_all_linear_modules(registration.schema).len();
        let _ = writeln!(
            text,
            "  {:<28} {:<32} {linear} linear targets",
            registration.name, registration.module_path
        );
    }
    let _ = writeln!(text, "blocks and layers: {}", others.join(", "));
    text
}

fn type_report(registration: &Registration, args: &InspectArgs) -> Result<String, Failure> {
    let title = format!("{} ({})", registration.name, registration.module_path);
    let schema: &Schema = registration.schema;
    if !args.target.is_empty() {
        return targets_report(&title, schema, None, args);
    }
    Ok(render(&title, &Summary::of(schema), &[], args.json))
}

fn checkpoint_report(
    path: &Path,
    checkpoint: &Checkpoint,
    args: &InspectArgs,
) -> Result<String, Failure> {
    let (read, named) = (
        checkpoint.files().len(),
        checkpoint.shards().len().max(checkpoint.files().len()),
    );
    let files = if read == named {
        format!("{read} file(s)")
    } else {
        format!("{read} of {named} file(s), the others absent")
    };
    let title = format!(
        "{}: {} tensors in {files}",
        path.display(),
        checkpoint.tensors().len()
    );
    let notes: Vec<String> = checkpoint.notes().iter().map(ToString::to_string).collect();
    if !args.target.is_empty() {
        return targets_report(&title, checkpoint, Some(checkpoint), args);
    }
    let mut summary = checkpoint.summary().to_json();
    if args.json {
        if let Some(object) = summary.as_object_mut() {
            object.insert("title".to_owned(), title.into());
            object.insert("notes".to_owned(), notes.into());
            object.insert(
                "towers".to_owned(),
                serde_json::to_value(checkpoint.towers())?,
            );
        }
        return Ok(json(&summary));
    }
    let mut text = render(&title, &checkpoint.summary(), &notes, false);
    if checkpoint.towers().len() > 1 {
        text.push_str("\ntowers:\n");
        for tower in checkpoint.towers() {
            let _ = writeln!(
                text,
                "  {:<28} {:<10} {} layers",
                tower_name(&tower.path),
                tower.kind.name(),
                tower.layers
            );
        }
    }
    Ok(text)
}

fn tower_name(path: &str) -> &str {
    if path.is_empty() { "(the rest)" } else { path }
}

/// The summary under a title line, then the notes; or one JSON object with `title` and `notes`.
fn render(title: &str, summary: &Summary, notes: &[String], as_json: bool) -> String {
    if as_json {
        let mut value = summary.to_json();
        if let Some(object) = value.as_object_mut() {
            object.insert("title".to_owned(), title.into());
            object.insert("notes".to_owned(), notes.into());
        }
        return json(&value);
    }
    let mut text = format!("{title}\n\n{summary}");
    if !notes.is_empty() {
        text.push_str("\nnotes:\n");
        for note in notes {
            let _ = writeln!(text, "  {note}");
        }
    }
    text
}

/// What each target entry selects in `model`, by normalized path, with its towers when `model`
/// is a checkpoint; the warnings of the whole spec.
fn targets_report<T: Walk + ?Sized>(
    title: &str,
    model: &T,
    checkpoint: Option<&Checkpoint>,
    args: &InspectArgs,
) -> Result<String, Failure> {
    let spec = TargetSpec::parse(&args.target)?;
    let resolution = spec.resolve(model)?;
    let tower = match (&args.tower, checkpoint) {
        (Some(wanted), Some(checkpoint)) => Some(find_tower(checkpoint, wanted)?),
        (Some(_), None) => return Err("`--tower` needs a checkpoint".into()),
        (None, _) => None,
    };
    let kept: Vec<&str> = resolution
        .paths()
        .filter(|path| tower.is_none_or(|tower| in_own_tower(checkpoint, tower, path)))
        .collect();
    if let Some(tower) = tower
        && kept.is_empty()
    {
        return Err(format!(
            "the targets select no layer in the tower `{}` (they select {} elsewhere)",
            tower_name(&tower.path),
            resolution.layers().len()
        )
        .into());
    }
    let mut warnings: Vec<String> = resolution
        .warnings()
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut entries = Vec::new();
    for entry in &args.target {
        let alone = TargetSpec::parse([entry])?.resolve(model);
        let Ok(alone) = alone else {
            continue;
        };
        let towers = checkpoint
            .map(|checkpoint| per_tower(checkpoint, &alone))
            .unwrap_or_default();
        if towers.len() > 1 && tower.is_none() {
            let counts: Vec<String> = towers
                .iter()
                .map(|(name, count)| format!("{count} in {name}"))
                .collect();
            warnings.push(format!(
                "target `{entry}` selects layers in {} towers: {}; scope it with --tower",
                towers.len(),
                counts.join(", ")
            ));
        }
        entries.push((entry.clone(), alone.layers().len(), towers));
    }
    let patterns = by_pattern(&resolution, &kept);
    if args.json {
        return Ok(json(&json!({
            "title": title,
            "entries": entries.iter().map(|(entry, count, towers)| json!({
                "entry": entry,
                "selected": count,
                "towers": towers.iter().map(|(name, count)| json!({"tower": name, "layers": count})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "selected": kept,
            "patterns": patterns.iter().map(|(pattern, count)| json!({"pattern": pattern, "layers": count})).collect::<Vec<_>>(),
            "warnings": warnings,
        })));
    }
    let mut text = format!("{title}\n\n");
    for (entry, count, towers) in &entries {
        let _ = write!(text, "target `{}`: {count} layer(s)", one_line(entry));
        if towers.len() > 1 {
            let counts: Vec<String> = towers.iter().map(|(n, c)| format!("{c} in {n}")).collect();
            let _ = write!(text, " ({})", counts.join(", "));
        }
        text.push('\n');
    }
    let scope = tower.map_or_else(String::new, |tower| {
        format!(" in {}", tower_name(&tower.path))
    });
    let _ = writeln!(text, "\nselected{scope}: {} layer(s)", kept.len());
    for (pattern, count) in &patterns {
        let _ = writeln!(text, "  {} × {count}", one_line(pattern));
    }
    for warning in &warnings {
        let _ = writeln!(text, "warning: {}", one_line(warning));
    }
    Ok(text)
}

/// The tower `wanted` names: by path, by kind (`vision`), or `(the rest)` / `""` for the root.
fn find_tower<'c>(
    checkpoint: &'c Checkpoint,
    wanted: &str,
) -> Result<&'c moduletree::checkpoint::Tower, Failure> {
    let towers = checkpoint.towers();
    let by_path = towers
        .iter()
        .find(|tower| tower.path == wanted || tower_name(&tower.path) == wanted);
    let mut by_kind = towers.iter().filter(|tower| tower.kind.name() == wanted);
    let found = by_path.or_else(|| match (by_kind.next(), by_kind.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    });
    found.ok_or_else(|| {
        let known: Vec<String> = towers
            .iter()
            .map(|tower| format!("`{}` ({})", tower_name(&tower.path), tower.kind.name()))
            .collect();
        format!(
            "no tower `{wanted}` in the checkpoint; its towers are {}",
            known.join(", ")
        )
        .into()
    })
}

/// Whether `path` lies in `tower` and in no tower nested inside it (the root tower holds what
/// the others do not).
fn in_own_tower(
    checkpoint: Option<&Checkpoint>,
    tower: &moduletree::checkpoint::Tower,
    path: &str,
) -> bool {
    checkpoint
        .and_then(|checkpoint| checkpoint.tower_of(path))
        .is_some_and(|own| own.path == tower.path)
}

/// How many of a resolution's layers lie in each tower, in the towers' order.
fn per_tower(checkpoint: &Checkpoint, resolution: &Resolution) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for path in resolution.paths() {
        let Some(tower) = checkpoint.tower_of(path) else {
            continue;
        };
        let name = tower_name(&tower.path).to_owned();
        match counts.iter_mut().find(|(seen, _)| *seen == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
}

/// The kept layers by normalized path, in walk order, with their counts.
fn by_pattern(resolution: &Resolution, kept: &[&str]) -> Vec<(String, usize)> {
    let kept: std::collections::HashSet<&str> = kept.iter().copied().collect();
    let mut patterns: Vec<(String, usize)> = Vec::new();
    for layer in resolution.layers() {
        if !kept.contains(layer.path.as_str()) {
            continue;
        }
        match patterns
            .iter_mut()
            .find(|(pattern, _)| **pattern == *layer.normalized)
        {
            Some((_, count)) => *count += 1,
            None => patterns.push((layer.normalized.to_string(), 1)),
        }
    }
    patterns
}
