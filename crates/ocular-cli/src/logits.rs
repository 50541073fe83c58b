//! `ocular logits`: the contract for checking parity from outside. Prints one JSON object
//! `{"token_ids": [...], "logits": [...]}`: the input ids after placeholders are expanded and
//! the f32 logits at the last position.

use anyhow::Result;

use ocular::prompt::Message;

use crate::common::{MediaArgs, ModelArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    media: MediaArgs,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// No chat template: tokenize the prompt as the model's transformers processor does,
    /// expanding each image placeholder in it (`<image>` for LLaVA).
    #[arg(long)]
    raw: bool,
}

pub fn main(args: Args) -> Result<()> {
    let pipeline = args.model.load()?;
    let media = args.media.load(&args.model)?;
    let prepared = if args.raw {
        pipeline.prepare_raw(&args.prompt, &media)?
    } else {
        let message = Message::user_with_media(&args.prompt, media.images.len(), media.videos.len());
        pipeline.prepare_chat(&[message], &media)?
    };
    let logits = pipeline.last_logits(&prepared)?;
    println!("{}", serde_json::json!({ "token_ids": prepared.ids, "logits": logits }));
    Ok(())
}
