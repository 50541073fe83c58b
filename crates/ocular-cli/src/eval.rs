//! `ocular eval`: score a model on a seeded evaluation suite (the procedural scenes of
//! `ocular::train::scenes`: accuracy per task, box quality for grounding) or on your own
//! conversations (exact answers); a table or JSON.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use ocular::train::conversation_eval::{self, Answered};
use ocular::train::conversations::{ConversationsConfig, Dataset};
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
    /// Examples in all, spread evenly over the tasks (at least one per task); with
    /// conversations, the most answers asked, in file order.
    #[arg(long, default_value_t = 1000, value_parser = parse_n)]
    n: usize,
    /// With `--suite conversations`: the conversations, a JSON array or JSON Lines file in
    /// LLaVA's format (as `[conversations]` of `ocular train` reads them).
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Where the conversations' image and video paths are looked up (default: the file's
    /// folder).
    #[arg(long, value_name = "DIR")]
    media_folder: Option<PathBuf>,
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
    /// Your own conversations (`--data`): every answer turn, asked after the true turns before it.
    Conversations,
}

/// Too few examples is a usage error, found before any weights are loaded.
fn parse_n(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    eval::examples_per_task(n, Task::ALL.len()).map(|_| n).map_err(|e| e.to_string())
}

/// Where answers go as they are scored: a JSON line each in `--predictions`, and a progress
/// count on stderr (rewritten in place on a terminal, a line at each tenth elsewhere). A write
/// error is kept and reported when the run ends.
struct Output<'a> {
    args: &'a Args,
    predictions: Option<RefCell<BufWriter<File>>>,
    write_error: RefCell<Option<anyhow::Error>>,
    terminal: bool,
    line_open: Cell<bool>,
    last_tenth: Cell<Option<usize>>,
}

impl<'a> Output<'a> {
    /// Opened before the weights load, so a bad path fails at once.
    fn open(args: &'a Args) -> Result<Self> {
        let predictions = match &args.predictions {
            Some(path) => Some(RefCell::new(BufWriter::new(
                File::create(path).with_context(|| format!("cannot write predictions to {}", path.display()))?,
            ))),
            None => None,
        };
        if let Some(dir) = &args.images {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the image folder {}", dir.display()))?;
        }
        Ok(Self {
            args,
            predictions,
            write_error: RefCell::new(None),
            terminal: std::io::stderr().is_terminal(),
            line_open: Cell::new(false),
            last_tenth: Cell::new(None),
        })
    }

    fn keep_error(&self, e: anyhow::Error) {
        self.write_error.borrow_mut().get_or_insert(e);
    }

    fn record(&self, line: serde_json::Value, done: usize, total: usize) {
        if let Some(out) = &self.predictions {
            let mut out = out.borrow_mut();
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                let path = self.args.predictions.as_ref().expect("predictions are written to a file");
                self.keep_error(
                    anyhow::Error::new(e).context(format!("cannot write predictions to {}", path.display())),
                );
            }
        }
        if self.args.model.quiet {
            return;
        }
        if self.terminal {
            self.line_open.set(true);
            eprint!("\revaluating: {done}/{total}");
        } else {
            let tenth = done * 10 / total.max(1);
            if self.last_tenth.get() != Some(tenth) {
                self.last_tenth.set(Some(tenth));
                eprintln!("evaluating: {done}/{total}");
            }
        }
    }

    /// Ends the progress line; the first write error, if any.
    fn finish(self) -> Result<()> {
        if self.line_open.get() {
            eprintln!();
        }
        self.write_error.into_inner().map_or(Ok(()), Err)
    }
}

pub fn main(args: Args) -> Result<()> {
    if let (Suite::Scenes, Some(_)) = (args.suite, &args.data) {
        anyhow::bail!("--data is for --suite conversations (the scenes suite makes its own examples)");
    }
    // A bad data file is found before any weights load.
    let dataset = match args.suite {
        Suite::Scenes => None,
        Suite::Conversations => {
            let data = args
                .data
                .clone()
                .context("--suite conversations needs --data FILE (conversations in LLaVA's JSON format)")?;
            let settings = ConversationsConfig {
                train: Some(data),
                media_folder: args.media_folder.clone(),
                max_image_pixels: args.model.max_image_pixels,
                ..Default::default()
            };
            Dataset::open(&settings)?
        }
    };
    let output = Output::open(&args)?;
    let pool = eval::pool(crate::common::example_threads(args.threads))?;
    let pipeline = args.model.load()?;
    let json = match &dataset {
        Some(dataset) => {
            let each = |a: &Answered| {
                let line = serde_json::json!({
                    "entry": a.entry.name, "turn": a.turn, "question": a.question,
                    "expected": a.expected, "answer": a.answer, "correct": a.correct,
                });
                output.record(line, a.done, a.total);
            };
            let report = conversation_eval::evaluate(&pipeline, dataset, args.n, pool.as_ref(), each);
            output.finish()?;
            let report = report?;
            if !args.json {
                let s = report.conversations;
                println!(
                    "{:<14} {:>6} {:>9}\n{:<14} {:>6} {:>8.1}%",
                    "",
                    "n",
                    "accuracy",
                    "conversations",
                    s.n,
                    100.0 * s.accuracy
                );
                return Ok(());
            }
            serde_json::to_string(&report)?
        }
        None => {
            let each = |scored: &Scored| {
                let saved = match &args.images {
                    Some(dir) => save_images(dir, scored).unwrap_or_else(|e| {
                        output.keep_error(e);
                        vec![]
                    }),
                    None => vec![],
                };
                let mut line = prediction_line(scored);
                if args.images.is_some() {
                    line["images"] = serde_json::json!(saved);
                }
                output.record(line, scored.done, scored.total);
            };
            let report: Result<Report, _> =
                eval::evaluate(&pipeline, eval::Suite::Scenes, args.n, args.seed, pool.as_ref(), each);
            output.finish()?;
            let report = report?;
            if !args.json {
                println!("{}", report.table());
                return Ok(());
            }
            serde_json::to_string(&report)?
        }
    };
    println!("{json}");
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
