//! From scene examples to what the model trains on. Each example is rendered with the chat
//! template and prepared exactly as at inference time, with the answer's tokens (through the
//! turn's end token, Qwen2's `<|im_end|>`, or, for a template without one, the model's EOS: so
//! the model learns to stop) as targets; only answer tokens are scored.
//!
//! Examples about the same media are packed into one sequence: the shared prefix (the
//! template, and the image when it comes before the question) once, then each example's own
//! tokens, each attending to the prefix and to itself only, at the positions it would have
//! alone. Every answer is trained exactly as if it were asked by itself. When the question
//! comes first (`[model] text_before_media`), each branch holds its own copy of
//! the image tokens, since what they compute depends on the question before them.

use candle_core::{Device, Tensor};

use super::inventory::{inventories, Inventory};
use super::model::TrainModel;
use super::object_box::{box_digits, ObjectBox};
use super::pointer::{covered_cells, Pointer};
use super::scenes::{Example, Scene, Task};
pub use super::turns::Chat;
use super::turns::{common_prefix, render_turns, Single};
use crate::error::{Error, Result};
use crate::image::Video;
use crate::models::qwen2_vl::Qwen2Vl;
use crate::models::{Media, MediaKind, Prepared, VisionLanguageModel};
use crate::prompt::Message;

pub struct Sample {
    /// The packed ids (shared prefix, then each branch) with the media of the prefix.
    pub prepared: Prepared,
    /// M-RoPE positions of every packed token.
    pub positions: Vec<[i64; 3]>,
    /// (seq, seq) additive attention mask.
    pub mask: Tensor,
    /// Rows whose next token is scored, and those tokens.
    pub rows: Vec<u32>,
    pub targets: Vec<u32>,
    /// Each packed answer's span of `rows` and `targets`.
    pub answers: Vec<std::ops::Range<usize>>,
    /// Each answer about objects: the rows that should look and the image tokens to look at
    /// (`train::pointer`).
    pub pointers: Vec<Pointer>,
    /// Each of those answers' objects: the image tokens it covers and its box
    /// (`train::object_box`).
    pub boxes: Vec<ObjectBox>,
    /// Each image's tally at its end token (`train::inventory`).
    pub inventories: Vec<Inventory>,
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

/// Packs `group` (examples sharing the same media, as [`super::scenes::Generator::group`]
/// makes them) into one training sequence.
pub fn sample(model: &dyn TrainModel, chat: &Chat, group: &[Example]) -> Result<Sample> {
    let first = group.first().ok_or_else(|| {
        Error::Invalid(
            "the data config yields no questions for its tasks (check [data] tasks, object counts and canvas sides)"
                .into(),
        )
    })?;
    let media = media(first);
    let singles: Vec<Single> = group
        .iter()
        .map(|e| render_turns(model, chat, &[user_message(e), Message::assistant(&e.answer)], &media, usize::MAX))
        .collect::<Result<_>>()?;
    let mut sample = pack(model, singles, group)?;
    sample.inventories = inventory_labels(model, &sample.prepared.ids, &first.scenes)?;
    Ok(sample)
}

/// The tallies of `scenes` at their image end tokens in `ids`: once each when the images lie
/// in the shared prefix, in every branch when each branch holds its own copy of them.
fn inventory_labels(model: &dyn TrainModel, ids: &[u32], scenes: &[Scene]) -> Result<Vec<Inventory>> {
    let end = model.as_qwen2_vl().and_then(|q| q.tokenizer().token_id("<|vision_end|>"));
    let (Some(end), false) = (end, scenes.is_empty()) else { return Ok(Vec::new()) };
    let copies = (ids.iter().filter(|&&t| t == end).count() / scenes.len()).max(1);
    let scenes: Vec<Scene> = scenes.iter().cycle().take(copies * scenes.len()).cloned().collect();
    inventories(ids, end, &scenes)
}

/// One of the user's conversations (`train::conversations`) as a training sequence: every
/// answer scored, turns past `max_tokens` left out.
pub fn conversation_sample(
    model: &dyn TrainModel,
    chat: &Chat,
    messages: &[Message],
    media: &Media,
    max_tokens: usize,
) -> Result<Sample> {
    pack(model, vec![render_turns(model, chat, messages, media, max_tokens)?], &[])
}

/// Packs `singles` into one sequence: their shared prefix once, then each one's own tokens.
/// `examples`, where given, are the scene examples they were rendered from (for the pointer
/// labels).
fn pack(model: &dyn TrainModel, singles: Vec<Single>, examples: &[Example]) -> Result<Sample> {
    // The shared prefix stops before any branch's first scored row.
    let mut prefix = singles.iter().map(|s| s.answers[0].start - 1).min().unwrap_or(0);
    for s in &singles[1..] {
        prefix = prefix.min(common_prefix(&singles[0].prepared.ids, &s.prepared.ids));
    }
    let mut ids = singles[0].prepared.ids[..prefix].to_vec();
    let mut positions = model.positions(&singles[0].prepared)?[..prefix].to_vec();
    let (mut rows, mut targets, mut branches, mut answers) = (vec![], vec![], vec![], vec![]);
    let (mut pointers, mut boxes) = (vec![], vec![]);
    for (i, s) in singles.iter().enumerate() {
        let start = ids.len();
        let packed = |i| if i < prefix { i } else { start + i - prefix };
        let example = examples.get(i);
        if let Some((p, b)) =
            model.as_qwen2_vl().zip(example).map(|(q, example)| pointer(q, s, example, packed)).transpose()?.flatten()
        {
            pointers.push(p);
            boxes.extend(b);
        }
        let own = &s.prepared.ids;
        ids.extend_from_slice(&own[prefix..]);
        positions.extend_from_slice(&model.positions(&s.prepared)?[prefix..]);
        for span in &s.answers {
            let first = targets.len();
            for i in span.clone() {
                rows.push(packed(i - 1) as u32);
                targets.push(own[i]);
            }
            answers.push(first..targets.len());
        }
        branches.push(start..ids.len());
    }
    let mask = branch_mask(ids.len(), prefix, &branches, model.device())?;
    // Media placed after the question (a question-first template) fall in each branch rather
    // than in the shared prefix: then every branch carries its own copy of them.
    let media_tokens = model.media_token_ids();
    let in_prefix = singles[0].prepared.ids[..prefix].iter().any(|t| media_tokens.contains(t));
    let media_inputs = if in_prefix {
        singles.into_iter().next().map(|s| s.prepared.media).unwrap_or_default()
    } else {
        singles.into_iter().flat_map(|s| s.prepared.media).collect()
    };
    Ok(Sample {
        prepared: Prepared { ids, media: media_inputs },
        positions,
        mask,
        rows,
        targets,
        answers,
        pointers,
        boxes,
        inventories: Vec::new(),
    })
}

/// An example's [`Pointer`], as rows of the packed sequence (`packed` maps the single's own
/// indices there): for a box answer, the rows from its `<|box_start|>` up to its `<|box_end|>`;
/// for another one-image answer about objects, every row of the answer; with the image tokens
/// its focus boxes cover; and each focus box with the tokens it covers. An answer about objects
/// the scene lacks ([`Example::about_absent`]) points at the image's `<|vision_start|>` token
/// instead. `None` for examples about no object.
fn pointer(
    model: &Qwen2Vl,
    s: &Single,
    example: &Example,
    packed: impl Fn(usize) -> usize,
) -> Result<Option<(Pointer, Vec<ObjectBox>)>> {
    let absent = example.about_absent();
    let no_focus = example.focus.is_empty() && !absent;
    let (Some(image), false) = (example.images.first(), no_focus || example.images.len() > 1) else {
        return Ok(None);
    };
    let own = &s.prepared.ids;
    let answer = s.answers[0].clone();
    let tokenizer = model.tokenizer();
    let find = |token: &str| tokenizer.token_id(token).and_then(|t| own[answer.clone()].iter().position(|&u| u == t));
    let box_rows = match (example.target_box, find("<|box_start|>"), find("<|box_end|>")) {
        (Some(_), Some(from), Some(to)) => Some(answer.start + from..answer.start + to),
        _ => None,
    };
    let grounding = box_rows.is_some();
    let rows = box_rows.unwrap_or(answer.start - 1..answer.end - 1);
    let config = model.config();
    let merge = config.vision.merge_size;
    let grid = s.prepared.media.iter().find(|m| m.kind == MediaKind::Image).map(|m| m.grid_thw);
    let tokens: Vec<usize> = (0..own.len()).filter(|&i| own[i] == config.image_token_id).collect();
    let Some([_, h, w]) = grid else { return Ok(None) };
    let grid = [h / merge, w / merge];
    if tokens.len() != grid[0] * grid[1] {
        return Err(Error::Invalid(format!(
            "pointer labels: {} image tokens for a grid of {} x {} merged tokens",
            tokens.len(),
            grid[0],
            grid[1]
        )));
    }
    let queries = rows.map(|i| packed(i) as u32).collect();
    // A count or existence answer may look at the image's tally instead (`pointer_tally`).
    let tallied = example.kind == Task::Count
        || (example.kind == Task::Attribute && matches!(example.answer.as_str(), "yes" | "no"));
    let tally = match tallied {
        false => vec![],
        true => {
            let end = tokens
                .last()
                .map(|&t| t + 1)
                .filter(|&i| own.get(i).is_some_and(|&t| Some(t) == tokenizer.token_id("<|vision_end|>")));
            let end = end.ok_or_else(|| Error::Invalid("pointer labels: no <|vision_end|> after the image".into()))?;
            vec![packed(end) as u32]
        }
    };
    if absent {
        let start = tokens[0].checked_sub(1).filter(|&i| Some(own[i]) == tokenizer.token_id("<|vision_start|>"));
        let start =
            start.ok_or_else(|| Error::Invalid("pointer labels: no <|vision_start|> before the image".into()))?;
        return Ok(Some((
            Pointer { queries, keys: vec![packed(start) as u32], grounding: false, absent: true, tally },
            vec![],
        )));
    }
    let size = [image.width(), image.height()];
    let boxes: Vec<ObjectBox> = example
        .focus
        .iter()
        .map(|&b| {
            let keys = covered_cells(b, size, grid).into_iter().map(|c| packed(tokens[c]) as u32).collect();
            ObjectBox { keys, digits: box_digits(b, size) }
        })
        .collect();
    let mut keys: Vec<u32> = boxes.iter().flat_map(|b| b.keys.iter().copied()).collect();
    keys.sort_unstable();
    keys.dedup();
    Ok(Some((Pointer { queries, keys, grounding, absent: false, tally }, boxes)))
}

/// Causal within the prefix and within each branch; a branch also sees the whole prefix.
fn branch_mask(len: usize, prefix: usize, branches: &[std::ops::Range<usize>], device: &Device) -> Result<Tensor> {
    let mut mask = vec![f32::NEG_INFINITY; len * len];
    for q in 0..len {
        let own = branches.iter().find(|b| b.contains(&q)).map_or(0, |b| b.start);
        for k in (0..=q).filter(|&k| k < prefix || k >= own) {
            mask[q * len + k] = 0.0;
        }
    }
    Ok(Tensor::from_vec(mask, (len, len), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_see_the_prefix_and_themselves() {
        let m = branch_mask(6, 2, &[2..4, 4..6], &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let seen: Vec<Vec<usize>> =
            m.iter().map(|row| row.iter().enumerate().filter(|(_, v)| **v == 0.0).map(|(k, _)| k).collect()).collect();
        assert_eq!(seen, vec![vec![0], vec![0, 1], vec![0, 1, 2], vec![0, 1, 2, 3], vec![0, 1, 4], vec![0, 1, 4, 5]]);
    }
}
