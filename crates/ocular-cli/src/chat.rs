//! `ocular chat`: an interactive conversation. `/image PATH` or `/video PATH` attaches media to
//! the next turn, `/reset` starts over, `/exit` (or end of input) leaves. A failing turn is
//! reported and taken back; the conversation goes on.

use std::io::{BufRead, Write};

use anyhow::Result;
use ocular::image::{load_video, FrameSampling};
use ocular::models::Media;
use ocular::prompt::Message;

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

/// What the conversation has seen: its messages and every attached image and video.
struct Conversation {
    history: Vec<Message>,
    media: Media,
    pending: (usize, usize),
}

impl Conversation {
    fn new(opening: &[Message]) -> Self {
        Self { history: opening.to_vec(), media: Media::default(), pending: (0, 0) }
    }
}

pub fn main(args: Args) -> Result<()> {
    let pipeline = args.model.load()?;
    let options = args.generation.options(&pipeline);
    let opening: Vec<Message> = args.system.iter().map(|s| Message::system(s)).collect();
    let mut chat = Conversation::new(&opening);
    let interactive = !args.model.quiet;
    if interactive {
        eprintln!("chat: type a message; /image PATH or /video PATH attaches media, /reset starts over, /exit leaves");
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
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                chat = Conversation::new(&opening);
                continue;
            }
            _ => {}
        }
        if let Some(path) = line.strip_prefix("/image ") {
            match args.model.images(&[path.trim().into()]) {
                Ok(mut img) => {
                    chat.media.images.append(&mut img);
                    chat.pending.0 += 1;
                }
                Err(e) => eprintln!("error: {e:#}"),
            }
            continue;
        }
        if let Some(path) = line.strip_prefix("/video ") {
            match load_video(path.trim().as_ref(), &args.model.limits(), &FrameSampling::default()) {
                Ok(video) => {
                    chat.media.videos.push(video);
                    chat.pending.1 += 1;
                }
                Err(e) => eprintln!("error: {e:#}"),
            }
            continue;
        }
        chat.history.push(Message::user_with_media(line, chat.pending.0, chat.pending.1));
        let answer = pipeline.prepare_chat(&chat.history, &chat.media).and_then(|prepared| {
            pipeline.generate(&prepared, &options, &mut |t| {
                let _ = out.write_all(t.as_bytes()).and_then(|_| out.flush());
            })
        });
        match answer {
            Ok(generation) => {
                writeln!(out)?;
                chat.pending = (0, 0);
                chat.history.push(Message::assistant(generation.text.trim()));
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                chat.history.pop();
            }
        }
    }
    Ok(())
}
