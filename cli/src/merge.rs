//! `moduletree merge`: a PEFT adapter merged into a safetensors checkpoint shard by shard
//! ([`moduletree::peft::merge::merge`]), with a progress bar over the shards' bytes.

use std::fmt::Write as _;

use indicatif::{ProgressBar, ProgressStyle};
use moduletree::peft::merge::merge;

use crate::MergeArgs;
use crate::output::Failure;

pub fn run(args: &MergeArgs) -> Result<String, Failure> {
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{msg:40} [{bar:30}] {bytes}/{total_bytes}")?
                .progress_chars("=> "),
        )
    };
    // Called after each shard is written: the plan is checked before the first.
    let report = merge(&args.checkpoint, &args.adapter, &args.out, |step| {
        bar.set_length(step.total_bytes);
        bar.set_message(step.shard.clone());
        bar.inc(step.bytes);
    });
    bar.finish_and_clear();
    let report = report?;
    let rewritten = report
        .shards
        .iter()
        .filter(|shard| shard.changed > 0)
        .count();
    let mut text = format!(
        "merged {} layers into {}: {rewritten} of {} shards rewritten, the rest copied\n",
        report.layers.len(),
        report.out.display(),
        report.shards.len()
    );
    for shard in &report.shards {
        let _ = writeln!(
            text,
            "  {}  {}",
            shard.shard,
            if shard.changed == 0 {
                "copied".to_owned()
            } else {
                format!("{} tensors merged", shard.changed)
            }
        );
    }
    Ok(text)
}
