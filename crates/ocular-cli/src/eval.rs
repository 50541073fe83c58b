//! `ocular eval`: score a model on a seeded evaluation suite (the procedural scenes of
//! `ocular::train::scenes`): accuracy per task, box quality for grounding; a table or JSON.

use std::cell::Cell;
use std::io::IsTerminal;

use anyhow::Result;
use ocular::train::eval::{self, Report};

use crate::common::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// What to evaluate on.
    #[arg(long, value_enum, default_value = "scenes")]
    suite: Suite,
    /// Examples in all, spread evenly over the tasks (at least one per task).
    #[arg(long, default_value_t = 1000, value_parser = parse_n)]
    n: usize,
    /// Seed of the examples; the same seed asks the same questions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Suite {
    /// Procedural scenes: caption, attribute, count, relation, grounding, multi-image, video.
    Scenes,
}

/// Too few examples is a usage error, found before any weights are loaded.
fn parse_n(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    eval::examples_per_task(n).map(|_| n).map_err(|e| e.to_string())
}

pub fn main(args: Args) -> Result<()> {
    let suite = match args.suite {
        Suite::Scenes => eval::Suite::Scenes,
    };
    let pipeline = args.model.load()?;
    let terminal = std::io::stderr().is_terminal();
    let line_open = Cell::new(false);
    let mut last_tenth = None;
    // On a terminal the count is rewritten in place; elsewhere a line at each tenth of the run.
    let progress = |done: usize, total: usize| {
        if args.model.quiet {
            return;
        }
        if terminal {
            line_open.set(true);
            eprint!("\revaluating: {done}/{total}");
        } else {
            let tenth = done * 10 / total.max(1);
            if last_tenth != Some(tenth) {
                last_tenth = Some(tenth);
                eprintln!("evaluating: {done}/{total}");
            }
        }
    };
    let report: Result<Report, _> = eval::evaluate(&pipeline, suite, args.n, args.seed, progress);
    if line_open.get() {
        eprintln!();
    }
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.table());
    }
    Ok(())
}
