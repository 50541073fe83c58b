//! `ocular`: run vision-language models from the command line. One file per subcommand.

mod chat;
mod common;
mod ground;
mod info;
mod logits;
mod run;

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
    /// Architecture, parameters per part, dtype and memory of a model.
    Info(info::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::main(a),
        Command::Chat(a) => chat::main(a),
        Command::Ground(a) => ground::main(a),
        Command::Logits(a) => logits::main(a),
        Command::Info(a) => info::main(a),
    };
    if let Err(e) = result {
        common::end_progress_line();
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
