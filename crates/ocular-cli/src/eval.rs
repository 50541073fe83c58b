//! `ocular eval`: score a model on a seeded evaluation suite (the procedural scenes of
//! `ocular::train::scenes`): accuracy per task, box quality for grounding; a table or JSON.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use ocular::train::eval::{self, Report, Scored};
use ocular::train::scenes::Task;

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
    /// Also write every answer to FILE as JSON lines (task, question, expected, answer,
    /// correct, and iou for boxes), each line as soon as it is scored.
    #[arg(long, value_name = "FILE")]
    predictions: Option<PathBuf>,
    /// Also save every example's images (and video frames) as PNG files in DIR, named by the
    /// example's number and task, and list them in its line of `--predictions`.
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Threads answering examples at once, one example per thread at a time (default: every
    /// core). The answers do not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Suite {
    /// Procedural scenes: caption, attribute, count, relation, grounding, multi-image, video.
    Scenes,
}

/// Too few examples is a usage error, found before any weights are loaded.
fn parse_n(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    eval::examples_per_task(n, Task::ALL.len()).map(|_| n).map_err(|e| e.to_string())
}

pub fn main(args: Args) -> Result<()> {
    let suite = match args.suite {
        Suite::Scenes => eval::Suite::Scenes,
    };
    // Opened before the weights load, so a bad path fails at once.
    let predictions = match &args.predictions {
        Some(path) => Some(RefCell::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot write predictions to {}", path.display()))?,
        ))),
        None => None,
    };
    if let Some(dir) = &args.images {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the image folder {}", dir.display()))?;
    }
    let write_error: RefCell<Option<anyhow::Error>> = RefCell::new(None);
    let pool = eval::pool(crate::common::example_threads(args.threads))?;
    let pipeline = args.model.load()?;
    let terminal = std::io::stderr().is_terminal();
    let line_open = Cell::new(false);
    let mut last_tenth = None;
    // On a terminal the count is rewritten in place; elsewhere a line at each tenth of the run.
    let each = |scored: &Scored| {
        let saved = match &args.images {
            Some(dir) => save_images(dir, scored).unwrap_or_else(|e| {
                write_error.borrow_mut().get_or_insert(e);
                vec![]
            }),
            None => vec![],
        };
        if let Some(out) = &predictions {
            let mut line = prediction_line(scored);
            if args.images.is_some() {
                line["images"] = serde_json::json!(saved);
            }
            let mut out = out.borrow_mut();
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                let path = args.predictions.as_ref().expect("predictions are written to a file");
                let e = anyhow::Error::new(e).context(format!("cannot write predictions to {}", path.display()));
                write_error.borrow_mut().get_or_insert(e);
            }
        }
        let (done, total) = (scored.done, scored.total);
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
    let report: Result<Report, _> = eval::evaluate(&pipeline, suite, args.n, args.seed, pool.as_ref(), each);
    if line_open.get() {
        eprintln!();
    }
    if let Some(e) = write_error.into_inner() {
        return Err(e);
    }
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.table());
    }
    Ok(())
}

/// Writes the example's images, or its video's frames, to `dir`; returns their paths.
fn save_images(dir: &std::path::Path, s: &Scored) -> Result<Vec<String>> {
    let stem = format!("{:05}-{}", s.done, s.example.kind.name());
    let named = s.example.images.iter().enumerate().map(|(i, image)| (format!("{stem}-{}.png", i + 1), image));
    let frames = s.example.video.iter().flatten().enumerate().map(|(i, f)| (format!("{stem}-frame{}.png", i + 1), f));
    let mut paths = vec![];
    for (name, image) in named.chain(frames) {
        let path = dir.join(name);
        image.save(&path).with_context(|| format!("cannot write {}", path.display()))?;
        paths.push(path.display().to_string());
    }
    Ok(paths)
}

/// One answer as a JSON line: what was asked, what was expected, what the model said.
fn prediction_line(s: &Scored) -> serde_json::Value {
    let mut line = serde_json::json!({
        "task": s.example.kind.name(),
        "question": s.example.question,
        "expected": s.example.answer,
        "answer": s.prediction.answer,
        "correct": s.correct,
    });
    if let Some(iou) = s.iou {
        line["iou"] = serde_json::json!(iou);
    }
    line
}
