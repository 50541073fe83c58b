//! `ocular chat`: an interactive conversation. `/image PATH` attaches an image to the next
//! turn, `/reset` starts over, `/exit` (or end of input) leaves.

use std::io::{BufRead, Write};

use anyhow::Result;
use ocular::prompt::{Message, Part};

use crate::common::{GenerationArgs, ModelArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    generation: GenerationArgs,
    /// A system message that opens the conversation.
    #[arg(long)]
    system: Option<String>,
}

pub fn main(args: Args) -> Result<()> {
    let pipeline = args.model.load()?;
    let options = args.generation.options(&pipeline);
    let opening: Vec<Message> = args.system.iter().map(|s| Message::system(s)).collect();
    let mut history = opening.clone();
    let mut images = Vec::new();
    let mut pending_images = 0;
    let interactive = !args.model.quiet;
    if interactive {
        eprintln!("chat: type a message; /image PATH attaches an image, /reset starts over, /exit leaves");
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        if interactive {
            eprint!("> ");
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/exit" || line == "/quit" {
            break;
        }
        if line == "/reset" {
            history = opening.clone();
            images.clear();
            pending_images = 0;
            continue;
        }
        if let Some(path) = line.strip_prefix("/image") {
            // A bad image is reported and the conversation goes on.
            match args.model.images(&[path.trim().into()]) {
                Ok(mut img) => {
                    images.append(&mut img);
                    pending_images += 1;
                    if interactive {
                        eprintln!("attached {} (image {} of this chat)", path.trim(), images.len());
                    }
                }
                Err(e) => eprintln!("error: {e:#}"),
            }
            continue;
        }
        history.push(Message::user(line, pending_images));
        let media = ocular::models::Media::images(images.clone());
        let prepared = match pipeline.prepare_chat(&history, &media) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e:#}");
                history.pop();
                continue;
            }
        };
        pending_images = 0;
        let generation = pipeline.generate(&prepared, &options, &mut |t| {
            let _ = out.write_all(t.as_bytes()).and_then(|_| out.flush());
        })?;
        writeln!(out)?;
        history.push(Message::new("assistant", vec![Part::Text { text: generation.text.trim().to_string() }]));
    }
    Ok(())
}
