//! `ocular run`: one turn with the model's chat template, the answer streamed to stdout.

use std::io::Write;

use anyhow::Result;
use ocular::prompt::Message;

use crate::common::{GenerationArgs, MediaArgs, ModelArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    generation: GenerationArgs,
    /// A system message before the question.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    media: MediaArgs,
    /// What to ask.
    prompt: String,
}

pub fn main(args: Args) -> Result<()> {
    let media = args.media.load(&args.model)?;
    let pipeline = args.model.load()?;
    let options = args.generation.options(&pipeline);
    let mut messages: Vec<Message> = args.system.iter().map(|s| Message::system(s)).collect();
    messages.push(Message::user_with_media(&args.prompt, media.images.len(), media.videos.len()));
    let prepared = pipeline.prepare_chat(&messages, &media)?;
    let mut out = std::io::stdout().lock();
    let generation = pipeline.generate(&prepared, &options, &mut |text| {
        // A closed pipe (`| head`) ends the answer early; nothing else to do about it.
        let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    })?;
    writeln!(out)?;
    if !args.model.quiet {
        eprintln!("{}", generation.summary());
    }
    Ok(())
}
