//! `ocular eval --suite conversations`: how a model answers the user's own held-out
//! conversations (`train::conversations`). Each answer turn is asked with the true turns
//! before it, answered greedily, and compared with the expected answer by exact match after
//! normalising case, surrounding space and a final full stop ([`normalized_answer`]).

use serde::{Deserialize, Serialize};

use super::conversations::{Dataset, Entry};
use super::eval::MAX_NEW_TOKENS;
use super::parallel;
use super::scenes::normalized_answer;
use crate::error::{Error, Result};
use crate::generate::SamplingParams;
use crate::models::Media;
use crate::pipeline::{GenerateOptions, Pipeline};
use crate::prompt::{Message, Part};

/// JSON: `{"conversations": {"n": .., "accuracy": ..}}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConversationReport {
    pub conversations: Score,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Answers asked.
    pub n: usize,
    /// Share of them the model gave exactly (after normalising).
    pub accuracy: f64,
}

/// One answer turn as [`evaluate`] scored it, passed to its caller as it comes.
#[derive(Debug, Clone)]
pub struct Answered<'a> {
    pub done: usize,
    pub total: usize,
    pub entry: &'a Entry,
    /// Which answer of the conversation (1 for the first).
    pub turn: usize,
    /// The text of the human turn before it.
    pub question: String,
    pub expected: String,
    pub answer: String,
    pub correct: bool,
}

/// One answer to ask: an entry, and the index of its assistant message.
struct Ask<'a> {
    entry: &'a Entry,
    message: usize,
    turn: usize,
}

/// Asks `pipeline` the answer turns of `dataset`'s eval file (or its train file without one),
/// at most `n` of them in file order; with `pool`, several at once. `each` sees every answer,
/// in order.
pub fn evaluate(
    pipeline: &Pipeline,
    dataset: &Dataset,
    n: usize,
    pool: Option<&rayon::ThreadPool>,
    mut each: impl FnMut(&Answered),
) -> Result<ConversationReport> {
    let file = dataset.eval.as_ref().unwrap_or(&dataset.train);
    let asks: Vec<Ask> = file
        .entries
        .iter()
        .flat_map(|entry| {
            let answers = entry.messages.iter().enumerate().filter(|(_, m)| m.role == "assistant");
            answers.enumerate().map(move |(turn, (message, _))| Ask { entry, message, turn: turn + 1 })
        })
        .take(n)
        .collect();
    let chunk = pool.map_or(1, |p| 4 * p.current_num_threads());
    let (mut done, mut right) = (0, 0);
    for chunk in asks.chunks(chunk) {
        let answers = parallel::map(pool, chunk, &|ask: &Ask| {
            answer(pipeline, dataset, ask)
                .map_err(|e| Error::model_file(&file.path, format!("{}: {e}", ask.entry.name)))
        })?;
        for (ask, answer) in chunk.iter().zip(answers) {
            let expected = text_of(&ask.entry.messages[ask.message]);
            let correct = normalized_answer(&answer) == normalized_answer(&expected);
            (done, right) = (done + 1, right + usize::from(correct));
            let question = text_of(&ask.entry.messages[ask.message - 1]);
            let entry = ask.entry;
            each(&Answered { done, total: asks.len(), entry, turn: ask.turn, question, expected, answer, correct });
        }
    }
    let accuracy = if done == 0 { 0.0 } else { right as f64 / done as f64 };
    Ok(ConversationReport { conversations: Score { n: done, accuracy } })
}

/// The greedy answer to `ask`, after the conversation's true turns before it and the media
/// they show.
fn answer(pipeline: &Pipeline, dataset: &Dataset, ask: &Ask) -> Result<String> {
    let history = &ask.entry.messages[..ask.message];
    let count = |wanted: Part| history.iter().flat_map(|m| &m.content).filter(|p| **p == wanted).count();
    let mut media: Media = dataset.media(ask.entry)?;
    media.images.truncate(count(Part::Image));
    media.videos.truncate(count(Part::Video));
    let prepared = pipeline.prepare_chat(history, &media)?;
    // Room for the expected answer and then some, so a long answer can match and a rambling one
    // stops.
    let expected = pipeline.model.tokenizer().encode(&text_of(&ask.entry.messages[ask.message]), false)?;
    let max_new_tokens = MAX_NEW_TOKENS.max(expected.len() + 16);
    let options = GenerateOptions { sampling: SamplingParams::greedy(), max_new_tokens, stop: vec![] };
    Ok(pipeline.generate(&prepared, &options, &mut |_| {})?.text)
}

fn text_of(message: &Message) -> String {
    let texts: Vec<&str> = message
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Text { text } => Some(text.trim()),
            _ => None,
        })
        .collect();
    texts.join(" ")
}
