//! `ocular logits`: the contract for checking parity from outside. Prints one JSON object
//! `{"token_ids": [...], "logits": [...]}`: the input ids after placeholders are expanded and
//! the f32 logits at the last position.

use std::path::PathBuf;

use anyhow::Result;

use crate::common::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// An image; repeat for several, in the order of their placeholders.
    #[arg(long)]
    image: Vec<PathBuf>,
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
    let images = args.model.images(&args.image)?;
    let prepared = if args.raw {
        pipeline.prepare_raw(&args.prompt, &images)?
    } else {
        pipeline.prepare_chat(
            &[ocular::prompt::Message::user(&args.prompt, images.len())],
            &images,
        )?
    };
    let logits = pipeline.last_logits(&prepared)?;
    println!(
        "{}",
        serde_json::json!({ "token_ids": prepared.ids, "logits": logits })
    );
    Ok(())
}
