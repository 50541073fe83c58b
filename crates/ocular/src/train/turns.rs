//! A conversation as the model trains on it: rendered with the model's chat template and
//! tokenised whole, as inference tokenises a conversation, with the tokens of each answer
//! marked for scoring: through the token that ends its turn (Qwen2's `<|im_end|>`), or, for a
//! template without one (LLaVA-1.5's "ASSISTANT: blue "), the answer then the EOS that stops
//! generation, as LLaVA's own training wrote each turn ("ASSISTANT: blue</s>").
//!
//! Tokenising the whole text rather than each piece alone matters for SentencePiece tokenizers
//! (Llama's, LLaVA-1.5's), which mark a word's leading space on the word: " blue" alone would
//! come out as a lone space token and "blue".

use std::ops::Range;

use super::model::TrainModel;
use crate::error::{Error, Result};
use crate::load::ModelDir;
use crate::models::{Media, MediaKind, Prepared};
use crate::pipeline::generation_settings;
use crate::prompt::{ChatTemplate, Message, TextTokenizer};

/// How a model's examples are written: its chat template, its tokenizer's BOS and EOS text
/// (for templates that write them) and the ids that end an answer, all as inference has them.
pub struct Chat {
    template: ChatTemplate,
    bos: Option<String>,
    eos: Option<String>,
    stop_ids: Vec<u32>,
}

impl Chat {
    pub fn load(dir: &ModelDir, tokenizer: &TextTokenizer) -> Result<Self> {
        let template = ChatTemplate::new(dir.chat_template()?.ok_or_else(|| {
            Error::model_file(dir.root(), "no chat template (chat_template.jinja, chat_template.json or tokenizer_config.json): training renders its questions with it")
        })?)?;
        let (_, stop_ids) = generation_settings(dir)?;
        Ok(Self { template, bos: tokenizer.bos_token.clone(), eos: tokenizer.eos_token.clone(), stop_ids })
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.template.render(messages, add_generation_prompt, self.bos.as_deref(), self.eos.as_deref())
    }
}

/// One conversation alone: its ids and media, and the spans of `prepared.ids` that are answers
/// to score.
pub struct Single {
    pub prepared: Prepared,
    pub answers: Vec<Range<usize>>,
}

/// `messages` (ending with an answer) with `media` as one training sequence; the turns whose
/// answers would end past `max_tokens` are left out.
pub fn render_turns(
    model: &dyn TrainModel,
    chat: &Chat,
    messages: &[Message],
    media: &Media,
    max_tokens: usize,
) -> Result<Single> {
    let tokenizer = model.tokenizer();
    let (text, spans) = training_text(chat, tokenizer, messages)?;
    if spans.is_empty() {
        return Err(Error::Invalid("the conversation has no answer to learn (no assistant turn)".into()));
    }
    let bos = tokenizer.adds_special_tokens_to(&text);
    let mut prepared = model.prepare(&text, media, bos)?;
    let text_ids = tokenizer.encode(&text, bos)?;
    let media_tokens = model.media_token_ids();
    let expanded = expansion_map(&text_ids, &prepared.ids, &media_tokens)?;
    // An answer's tokens: from the first token the text before it does not end with, through
    // the last token its text reaches into.
    let tokens_before = |at: usize| -> Result<(usize, bool)> {
        let ids = tokenizer.encode(&text[..at], bos)?;
        let shared = common_prefix(&ids, &text_ids);
        Ok((shared, shared < ids.len()))
    };
    let mut answers = vec![];
    for span in &spans {
        let (start, _) = tokens_before(span.start)?;
        let (end, cut) = tokens_before(span.end)?;
        answers.push(expanded[start]..expanded[(end + usize::from(cut)).min(text_ids.len())]);
    }
    let kept = answers.iter().take_while(|a| a.end <= max_tokens).count();
    if kept == 0 {
        return Err(Error::Invalid(format!(
            "its first answer ends at token {}, past the limit of {max_tokens} (conversations.max_tokens)",
            answers[0].end
        )));
    }
    answers.truncate(kept);
    // Nothing after the last kept answer is scored or seen by a scored row; its media go too.
    let end = answers[kept - 1].end;
    prepared.ids.truncate(end);
    let shown = |token: Option<&u32>| {
        let seen = text_ids.iter().zip(&expanded).filter(|(t, at)| Some(*t) == token && **at < end);
        seen.count()
    };
    let (mut images, mut videos) = (shown(media_tokens.first()), shown(media_tokens.get(1)));
    prepared.media.retain(|m| {
        let left = if m.kind == MediaKind::Image { &mut images } else { &mut videos };
        let keep = *left > 0;
        *left = left.saturating_sub(1);
        keep
    });
    Ok(Single { prepared, answers })
}

/// The rendered conversation with each answer's scored text marked: the answer through its
/// turn's end token, or the answer without its trailing space then the EOS text, for a
/// template that ends a turn with none.
fn training_text(chat: &Chat, tokenizer: &TextTokenizer, messages: &[Message]) -> Result<(String, Vec<Range<usize>>)> {
    let token_text = |id: u32| tokenizer.inner().id_to_token(id);
    let stop_texts: Vec<String> = chat.stop_ids.iter().filter_map(|&id| token_text(id)).collect();
    let (mut text, mut spans) = (String::new(), vec![]);
    // The rendered conversation so far: `text` without the EOS texts added.
    let mut rendered = String::new();
    let turns = messages.iter().enumerate().filter(|(_, m)| m.role == "assistant");
    for (at, (k, _)) in turns.enumerate() {
        let prompt = chat.render(&messages[..k], true)?;
        let full = chat.render(&messages[..=k], false)?;
        let (Some(segment), Some(answer)) = (prompt.strip_prefix(rendered.as_str()), full.strip_prefix(&prompt)) else {
            return Err(Error::Template(format!(
                "rendering answer {} does not extend the text rendered before it, so it cannot be trained turn by turn",
                at + 1
            )));
        };
        text.push_str(segment);
        let start = text.len();
        match stop_texts.iter().filter_map(|s| answer.find(s.as_str()).map(|i| i + s.len())).min() {
            Some(end) => {
                text.push_str(answer);
                spans.push(start..start + end);
                rendered = full;
            }
            None => {
                let eos = chat.stop_ids.first().and_then(|&id| token_text(id)).ok_or_else(|| {
                    Error::Invalid("the model folder names no end-of-sequence token (eos_token_id in generation_config.json or config.json), so an answer cannot be taught to stop".into())
                })?;
                let answer = answer.trim_end();
                text.push_str(answer);
                text.push_str(&eos);
                spans.push(start..text.len());
                rendered = format!("{prompt}{answer}");
            }
        }
    }
    Ok((text, spans))
}

/// For each index of `text_ids` (and one past the end), its index in `expanded`, the same text
/// tokenised with each media placeholder grown into its run of media tokens. Adjacent
/// placeholders of one kind share their run evenly (every image of a fixed-size tower has as
/// many tokens).
fn expansion_map(text_ids: &[u32], expanded: &[u32], media_tokens: &[u32]) -> Result<Vec<usize>> {
    let differ = |at: usize| {
        Error::Invalid(format!("the prepared prompt does not follow its text's tokens (at prepared token {at})"))
    };
    let mut map = Vec::with_capacity(text_ids.len() + 1);
    let (mut i, mut j) = (0, 0);
    while i < text_ids.len() {
        let t = text_ids[i];
        if !media_tokens.contains(&t) {
            if expanded.get(j) != Some(&t) {
                return Err(differ(j));
            }
            map.push(j);
            (i, j) = (i + 1, j + 1);
            continue;
        }
        let placeholders = text_ids[i..].iter().take_while(|&&u| u == t).count();
        let run = expanded[j..].iter().take_while(|&&u| u == t).count();
        if run < placeholders || run % placeholders != 0 {
            return Err(differ(j));
        }
        map.extend((0..placeholders).map(|k| j + k * run / placeholders));
        (i, j) = (i + placeholders, j + run);
    }
    if j != expanded.len() {
        return Err(differ(j));
    }
    map.push(j);
    Ok(map)
}

pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_map_onto_their_runs() {
        // text: a <img> b <img><img> c, each image 3 tokens (9 stands for the image token).
        let text = [1, 9, 2, 9, 9, 3];
        let expanded = [1, 9, 9, 9, 2, 9, 9, 9, 9, 9, 9, 3];
        assert_eq!(expansion_map(&text, &expanded, &[9]).unwrap(), vec![0, 1, 4, 5, 8, 11, 12]);
        assert!(expansion_map(&text, &expanded[..11], &[9]).is_err());
        assert!(expansion_map(&[1, 9, 9, 3], &[1, 9, 9, 9, 3], &[9]).is_err(), "an uneven split");
        assert!(expansion_map(&[1, 2], &[1, 3], &[9]).is_err());
    }
}
