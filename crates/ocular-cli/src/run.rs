//! `ocular run`: one turn with the model's chat template, the answer streamed to stdout.

use std::io::Write;

use anyhow::Result;
use ocular::pipeline::FinishReason;
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
    /// Print one JSON object when done instead of streaming text: the answer, every box found
    /// in it (on the first image, in its pixels), problems with box text, token counts.
    #[arg(long)]
    json: bool,
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
    let stream = !args.json;
    let generation = pipeline.generate(&prepared, &options, &mut |text| {
        // A closed pipe (`| head`) ends the answer early; nothing else to do about it.
        if stream {
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        }
    })?;
    if args.json {
        let original = media.images.first().map(|i| i.dimensions());
        let raw = pipeline.raw_text(&generation)?;
        let found = original.and_then(|size| pipeline.boxes(&raw, &prepared, size)).unwrap_or_default();
        let finish = match generation.finish_reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        };
        let json = serde_json::json!({
            "text": generation.text,
            "boxes": found.boxes,
            "problems": found.problems,
            "finish_reason": finish,
            "usage": {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.tokens.len()},
        });
        writeln!(out, "{json}")?;
    } else {
        writeln!(out)?;
    }
    if !args.model.quiet {
        eprintln!("{}", generation.summary());
    }
    Ok(())
}
