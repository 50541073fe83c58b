//! From a scene example to what the model trains on: the conversation rendered with the chat
//! template, the prompt prepared exactly as at inference time, and the answer's tokens (with the
//! closing `<|im_end|>`, so the model learns to stop) as targets. Only answer tokens are scored.

use super::scenes::Example;
use crate::error::{Error, Result};
use crate::image::Video;
use crate::models::{Media, Prepared, VisionLanguageModel};
use crate::prompt::{ChatTemplate, Message};

pub struct Sample {
    pub prepared: Prepared,
    /// Positions whose next token is scored, and those tokens.
    pub positions: Vec<u32>,
    pub targets: Vec<u32>,
}

pub fn media(example: &Example) -> Media {
    let videos = example
        .video
        .iter()
        .map(|frames| Video {
            frames: frames.iter().enumerate().map(|(i, f)| (format!("frame {i}"), f.clone())).collect(),
            indices: (0..frames.len()).collect(),
            total_frames: frames.len(),
            source_fps: crate::image::FOLDER_FPS,
            fps: crate::image::FOLDER_FPS,
        })
        .collect();
    Media { images: example.images.clone(), videos, ..Default::default() }
}

pub fn user_message(example: &Example) -> Message {
    Message::user_with_media(&example.question, example.images.len(), usize::from(example.video.is_some()))
}

pub fn sample(model: &dyn VisionLanguageModel, template: &ChatTemplate, example: &Example) -> Result<Sample> {
    let user = user_message(example);
    let prompt = template.render(std::slice::from_ref(&user), true, None, None)?;
    let full = template.render(&[user, Message::assistant(&example.answer)], false, None, None)?;
    let answer_text = full
        .strip_prefix(&prompt)
        .ok_or_else(|| Error::Template("the rendered answer does not extend the rendered prompt".into()))?;
    let mut prepared = model.prepare(&prompt, &media(example), false)?;
    let tokenizer = model.tokenizer();
    let end = tokenizer.token_id("<|im_end|>").ok_or_else(|| Error::Tokenizer("no <|im_end|> token".into()))?;
    let mut answer = tokenizer.encode(answer_text, false)?;
    // Score through the closing <|im_end|>; what the template adds after it is not the answer.
    let stop = answer.iter().position(|&t| t == end).map(|i| i + 1).unwrap_or(answer.len());
    answer.truncate(stop);
    let start = prepared.ids.len();
    prepared.ids.extend_from_slice(&answer);
    let positions = (start..start + answer.len()).map(|p| p as u32 - 1).collect();
    Ok(Sample { prepared, positions, targets: answer })
}
