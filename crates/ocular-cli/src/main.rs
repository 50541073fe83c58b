//! `ocular`: run vision-language models from the command line. One file per subcommand.

mod builtin;
mod chat;
mod common;
mod eval;
mod ground;
mod info;
mod logits;
mod run;
mod serve;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ocular", version, about = "Vision-language models: caption, answer, chat about images.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One turn with the model's chat template; the answer streams to stdout.
    Run(run::Args),
    /// Interactive multi-turn chat; `/image PATH` attaches an image.
    Chat(chat::Args),
    /// Find what a phrase names in an image; print its boxes as JSON.
    Ground(ground::Args),
    /// Print the input ids and last-position logits as JSON (parity checks).
    Logits(logits::Args),
    /// Train a model on the procedural scenes, or fine-tune one, from a TOML config.
    Train(train::Args),
    /// Architecture, parameters per part, dtype and memory of a model.
    Info(info::Args),
    /// Serve the model over HTTP: OpenAI and Ollama APIs and a chat page.
    Serve(serve::Args),
    /// Score a model on a seeded suite of scene questions: accuracy per task, grounding IoU.
    Eval(eval::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::main(a),
        Command::Chat(a) => chat::main(a),
        Command::Ground(a) => ground::main(a),
        Command::Logits(a) => logits::main(a),
        Command::Train(a) => train::main(a),
        Command::Info(a) => info::main(a),
        Command::Eval(a) => eval::main(a),
        Command::Serve(a) => serve::main(a),
    };
    if let Err(e) = result {
        common::end_progress_line();
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
