//! `ocular ground`: where is the thing a phrase names? Asks the model in its own grounding
//! idiom, reads every box in the answer and prints them as JSON in the original image's pixels;
//! `--draw` writes the image with the boxes on it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ocular::generate::SamplingParams;
use ocular::models::Media;
use ocular::pipeline::GenerateOptions;
use ocular::prompt::Message;

use crate::common::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The image to search.
    #[arg(long)]
    image: PathBuf,
    /// Write the image with the boxes and labels drawn on it to this PNG file.
    #[arg(long)]
    draw: Option<PathBuf>,
    /// Ask with this question instead of the model's own; `{phrase}` stands for the phrase.
    #[arg(long)]
    prompt: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Print the model's answer on stderr too.
    #[arg(long)]
    show_answer: bool,
    /// What to find, e.g. "the red car".
    phrase: String,
}

pub fn main(args: Args) -> Result<()> {
    let image = args.model.images(std::slice::from_ref(&args.image))?.remove(0);
    let pipeline = args.model.load()?;
    let question = match &args.prompt {
        Some(template) => template.replace("{phrase}", &args.phrase),
        None => match pipeline.model.grounding_prompt(&args.phrase) {
            Some(q) => q,
            None => bail!(
                "{} models do not answer with boxes; grounding needs a Qwen2-VL family model (or pass --prompt to ask anyway)",
                pipeline.model.info().family
            ),
        },
    };
    let size = image.dimensions();
    let media = Media::images(vec![image]);
    let prepared = pipeline.prepare_chat(&[Message::user(&question, 1)], &media)?;
    let options =
        GenerateOptions { sampling: SamplingParams::greedy(), max_new_tokens: args.max_new_tokens, stop: vec![] };
    let generation = pipeline.generate(&prepared, &options, &mut |_| {})?;
    let answer = pipeline.raw_text(&generation)?;
    if args.show_answer {
        eprintln!("answer: {answer}");
    }
    let Some(found) = pipeline.boxes(&answer, &prepared, size) else {
        bail!("{} models have no box convention to read answers with", pipeline.model.info().family);
    };
    for p in &found.problems {
        eprintln!("warning: {}: {:?}", p.reason, p.text);
    }
    if found.boxes.is_empty() && !args.model.quiet {
        eprintln!("warning: no box in the answer: {answer:?}");
    }
    println!("{}", serde_json::to_string(&found.boxes)?);
    if let Some(out) = &args.draw {
        let drawn = ocular::ground::draw(&media.images[0], &found.boxes);
        drawn.save(out).with_context(|| format!("{}: cannot write the drawing", out.display()))?;
    }
    Ok(())
}
