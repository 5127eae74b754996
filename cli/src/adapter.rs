//! `moduletree inspect --adapter DIR [--checkpoint PATH | NAME]`: what an adapter adapts and
//! what is wrong with it, from its config and header; with a checkpoint, the layers it would
//! adapt or the error loading would give (the loaders' own plan); with a model type, which of
//! its modules are layers of the type.

use std::fmt::Write as _;
use std::path::Path;

use moduletree::checkpoint::Checkpoint;
use moduletree::peft::inspect::{AdapterSummary, check_against_checkpoint};
use moduletree::peft::names::{ends_with_segments, parameter_owner};
use moduletree::registry;
use serde_json::{Value, json};

use crate::InspectArgs;
use crate::output::{Failure, Refused, json};

pub fn run(dir: &Path, args: &InspectArgs) -> Result<String, Failure> {
    let summary = AdapterSummary::read(dir)?;
    let mut report = Report::of(&summary);
    let mut loads = true;
    if let Some(path) = &args.checkpoint {
        let checkpoint = Checkpoint::open(path)?;
        loads = report.against_checkpoint(path, dir, &checkpoint);
    } else if let Some(name) = &args.name {
        loads = report.against_type(name, &summary)?;
    }
    let text = if args.json {
        json(&report.value)
    } else {
        report.text
    };
    if loads {
        Ok(text)
    } else {
        Err(Box::new(Refused(text)))
    }
}

/// The report, built as text and as JSON side by side.
struct Report {
    text: String,
    value: Value,
}

impl Report {
    fn of(summary: &AdapterSummary) -> Report {
        let config = &summary.config;
        let mut variants: Vec<&str> = Vec::new();
        if config.use_rslora {
            variants.push("rsLoRA (scale alpha/√r)");
        }
        if config.use_dora {
            variants.push("DoRA");
        }
        if config.target_parameters.is_some() {
            variants.push("target_parameters (fused expert banks)");
        }
        if config.modules_to_save.is_some() {
            variants.push("modules_to_save");
        }
        let embeddings = summary
            .modules
            .iter()
            .filter(|module| module.naming == moduletree::peft::names::FactorNaming::Embedding)
            .count();
        let mut text = format!(
            "{}: {} adapted modules ({embeddings} embeddings), {} saved parameters; r = {}, lora_alpha = {}\n",
            summary.dir.display(),
            summary.modules.len(),
            summary.parameters.len(),
            config.r,
            config.lora_alpha
        );
        if !variants.is_empty() {
            let _ = writeln!(text, "variants: {}", variants.join(", "));
        }
        let _ = writeln!(
            text,
            "target_modules (inferred from the file): {}",
            summary.target_modules.join(", ")
        );
        if !summary.rank_pattern.is_empty() {
            let pattern: Vec<String> = summary
                .rank_pattern
                .iter()
                .map(|(name, rank)| format!("{name}: {rank}"))
                .collect();
            let _ = writeln!(text, "rank_pattern (inferred): {}", pattern.join(", "));
        }
        if summary.problems.is_empty() {
            text.push_str("problems: none\n");
        } else {
            let _ = writeln!(text, "problems ({}):", summary.problems.len());
            for problem in &summary.problems {
                let _ = writeln!(text, "  {problem}");
            }
        }
        let value = json!({
            "dir": summary.dir.display().to_string(),
            "r": config.r,
            "lora_alpha": config.lora_alpha,
            "use_rslora": config.use_rslora,
            "variants": variants,
            "modules": summary.modules.iter().map(|module| json!({
                "path": module.path,
                "embedding": module.naming == moduletree::peft::names::FactorNaming::Embedding,
                "rank_in_file": module.rank(),
                "lora_A": module.a,
                "lora_B": module.b,
            })).collect::<Vec<_>>(),
            "saved_parameters": summary.parameters,
            "target_modules": summary.target_modules,
            "rank_pattern": summary.rank_pattern,
            "target_parameters": config.target_parameters,
            "problems": summary.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        Report { text, value }
    }

    fn insert(&mut self, key: &str, value: Value) {
        if let Some(object) = self.value.as_object_mut() {
            object.insert(key.to_owned(), value);
        }
    }

    /// Whether the adapter would load.
    fn against_checkpoint(&mut self, path: &Path, dir: &Path, checkpoint: &Checkpoint) -> bool {
        let _ = writeln!(self.text, "\nagainst {}:", path.display());
        match check_against_checkpoint(dir, checkpoint) {
            Ok((layers, unchecked)) => {
                let _ = writeln!(
                    self.text,
                    "  loads: yes, {} layers adapted (merge; attaching needs the model's own layers)",
                    layers.len()
                );
                if unchecked > 0 {
                    let _ = writeln!(
                        self.text,
                        "  {unchecked} of them in absent shards: their shapes were not checked"
                    );
                }
                for layer in &layers {
                    let _ = writeln!(
                        self.text,
                        "  {}  rank {} alpha {} scale {}",
                        layer.path, layer.rank, layer.alpha, layer.scale
                    );
                }
                let listed: Vec<Value> = layers
                    .iter()
                    .map(|layer| {
                        json!({"path": layer.path, "rank": layer.rank, "alpha": layer.alpha, "scale": layer.scale})
                    })
                    .collect();
                self.insert(
                    "against",
                    json!({"checkpoint": path.display().to_string(), "loads": true, "layers": listed, "shapes_unchecked": unchecked}),
                );
                true
            }
            Err(error) => {
                let _ = writeln!(self.text, "  loads: no: {error}");
                self.insert(
                    "against",
                    json!({"checkpoint": path.display().to_string(), "loads": false, "error": error.to_string()}),
                );
                false
            }
        }
    }

    /// Against a model type: each adapted module's path with indices as `<>` must be a layer of
    /// the type, or own a fused bank of it (shapes need a checkpoint). Whether all are.
    fn against_type(&mut self, name: &str, summary: &AdapterSummary) -> Result<bool, Failure> {
        let registration = registry::find_one(name)?;
        let layers: Vec<String> = moduletree::named_modules(registration.schema)
            .into_iter()
            .filter(|module| module.is_layer())
            .map(|module| module.normalized().to_owned())
            .collect();
        // PEFT keys a fused bank's factors on the module owning the parameter (`mlp.experts`,
        // `mlp.experts.base_layer` for a second parameter of it); the type's layer is the
        // parameter (`mlp.experts.gate_up_proj`).
        let banks: Vec<(&str, &str)> = summary
            .config
            .target_parameters
            .iter()
            .flatten()
            .filter_map(|name| name.rsplit_once('.'))
            .collect();
        // The bank layers of the type a bank module's factors stand for.
        let bank_layers = |normalized: &str| -> Vec<String> {
            let (owner, _) = parameter_owner(normalized);
            banks
                .iter()
                .filter(|(module, _)| ends_with_segments(owner, module))
                .map(|(_, parameter)| format!("{owner}.{parameter}"))
                .filter(|layer| layers.contains(layer))
                .collect()
        };
        let mut unknown = Vec::new();
        let mut patterns: Vec<(String, usize)> = Vec::new();
        for module in &summary.modules {
            let normalized = moduletree::normalize(&module.path);
            let banks = bank_layers(&normalized);
            let pattern = if layers.contains(&normalized) {
                Some(normalized)
            } else if !banks.is_empty() {
                Some(format!("{normalized} (fused bank: {})", banks.join(" or ")))
            } else {
                None
            };
            if let Some(pattern) = pattern {
                match patterns.iter_mut().find(|(p, _)| *p == pattern) {
                    Some((_, count)) => *count += 1,
                    None => patterns.push((pattern, 1)),
                }
            } else {
                unknown.push(module.path.clone());
            }
        }
        let _ = writeln!(self.text, "\nagainst {}:", registration.name);
        for (pattern, count) in &patterns {
            let _ = writeln!(self.text, "  {pattern} × {count}");
        }
        if unknown.is_empty() {
            let _ = writeln!(
                self.text,
                "  every adapted module is a layer of {} (shapes are checked against a checkpoint: --checkpoint)",
                registration.name
            );
        } else {
            let _ = writeln!(
                self.text,
                "  not layers of {} ({}):",
                registration.name,
                unknown.len()
            );
            for path in unknown.iter().take(8) {
                let _ = writeln!(self.text, "    {path}");
            }
        }
        let all_layers = unknown.is_empty();
        self.insert(
            "against",
            json!({
                "type": registration.name,
                "patterns": patterns.iter().map(|(p, c)| json!({"pattern": p, "layers": c})).collect::<Vec<_>>(),
                "not_layers": unknown,
                "loads": all_layers,
            }),
        );
        Ok(all_layers)
    }
}
