//! `ocular train --config FILE.toml [--resume]`: trains a new Qwen2-VL-architecture model on the
//! procedural scenes, or fine-tunes a model folder (`base` in the config), and writes a standard
//! model folder.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use ocular::train::config::TrainConfig;
use ocular::train::trainer::{Progress, Trainer};

use crate::common;

#[derive(clap::Args)]
pub struct Args {
    /// The run's settings (see configs/builtin.toml).
    #[arg(long)]
    config: PathBuf,
    /// Continue from the checkpoint in the output folder.
    #[arg(long)]
    resume: bool,
    /// Write the model folder here instead of the config's `out`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Threads sharing each step's examples, one example per thread at a time (default: every
    /// core). The result does not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub fn main(args: Args) -> Result<()> {
    let mut config = TrainConfig::from_file(&args.config)?;
    if let Some(out) = args.out {
        config.out = out;
    }
    let threads = common::example_threads(args.threads);
    // The trainer gives each thread whole items; candle's own per-operation thread pool would
    // make those threads queue for it and spin (steps 2.5x slower with CANDLE_NUM_THREADS=2 on
    // 2 cores). Set before the first tensor operation, which starts that pool.
    if threads > 1 && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let mut trainer = Trainer::new(config, args.resume)?;
    trainer.set_threads(threads)?;
    if !args.quiet {
        eprintln!(
            "training {:.2}M parameters from step {} on {threads} thread{}",
            trainer.parameters() as f64 / 1e6,
            trainer.step(),
            if threads == 1 { "" } else { "s" }
        );
    }
    let terminal = std::io::stderr().is_terminal();
    let quiet = args.quiet;
    let mut show = |p: &Progress| {
        if quiet {
            return;
        }
        let line = format!(
            "step {}/{}  loss {:.4}  lr {:.2e}  grad {:.2}  {}  ETA {}",
            p.step,
            p.steps,
            p.loss,
            p.lr,
            p.grad_norm,
            p.rate,
            duration(p.eta_secs)
        );
        let line = match p.dense {
            Some(d) => {
                let line = format!("{line}  dense colour {:.4} shape {:.4}", d.colour, d.shape);
                let line = d.elsewhere.map_or(line.clone(), |e| format!("{line} no-centre {e:.4}"));
                let line = d.size.map_or(line.clone(), |z| format!("{line} size {z:.4}"));
                let line = d.relation.map_or(line.clone(), |r| format!("{line} relation {r:.4}"));
                let line = d.count.map_or(line.clone(), |c| format!("{line} count {c:.4}"));
                let line = d.inventory.map_or(line.clone(), |i| format!("{line} inventory {i:.4}"));
                let line = d.motion.map_or(line.clone(), |m| format!("{line} motion {m:.4}"));
                let line = d.order.map_or(line.clone(), |o| format!("{line} order {o:.4}"));
                d.boxes.map_or(line.clone(), |b| format!("{line} boxes {b:.4}"))
            }
            None => line,
        };
        let line = p.position.map_or(line.clone(), |q| format!("{line}  position {q:.4}"));
        let line = p.pointer.map_or(line.clone(), |q| format!("{line}  pointer {q:.4}"));
        let line = p.object_box.map_or(line.clone(), |q| format!("{line}  box {q:.4}"));
        let line = p.inventory.map_or(line.clone(), |q| format!("{line}  inventory {q:.4}"));
        for skipped in &p.skipped {
            eprintln!("{}skipped {skipped}", if terminal { "\r" } else { "" });
        }
        if let Some(e) = p.eval_loss {
            eprintln!("{}{line}  held-out loss {e:.4}", if terminal { "\r" } else { "" });
        } else if terminal {
            eprint!("\r{line}   ");
        } else if p.step % 10 == 0 || p.step == p.steps {
            eprintln!("{line}");
        }
    };
    let out = trainer.run(&mut show)?;
    if !quiet {
        eprintln!("\nwrote {}", out.display());
    }
    Ok(())
}
