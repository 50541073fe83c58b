//! What a generation loop needs from the text side in one type: push each sampled id, print
//! the text that comes back, stop when told. Joins [`TextStream`] (detokenization) and
//! [`StopChecker`] (EOS, stop strings, token budget).

use tokenizers::Tokenizer;

use super::stop::{FinishReason, StopChecker, StopRules};
use super::stream::TextStream;
use super::GenerateError;

/// One step of [`StreamingText`]: text to show now and, on the last step, why it ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    pub text: String,
    pub finish: Option<FinishReason>,
}

/// Detokenization plus stop rules: a generation loop pushes each sampled id and prints
/// [`Step::text`] until [`Step::finish`] is set. EOS tokens are never shown; text is cut
/// before a stop string, and text that may begin one is held until it is known not to.
///
/// Stop strings are matched on the decoded text, so with `skip_special_tokens` a special
/// token never matches one: put such tokens' ids in [`StopRules::eos_ids`] instead.
pub struct StreamingText<'t> {
    stream: TextStream<'t>,
    stop: StopChecker,
    shown: String,
}

impl<'t> StreamingText<'t> {
    pub fn new(tokenizer: &'t Tokenizer, rules: StopRules, skip_special_tokens: bool) -> Self {
        Self {
            stream: TextStream::new(tokenizer, skip_special_tokens),
            stop: StopChecker::new(rules),
            shown: String::new(),
        }
    }

    /// Takes the next generated token. Once finished, further pushes return an empty step
    /// with the same reason.
    pub fn push(&mut self, id: u32) -> Result<Step, GenerateError> {
        if let Some(reason) = self.stop.finished() {
            return Ok(Step { text: String::new(), finish: Some(reason.clone()) });
        }
        let is_eos = self.stop.on_token(id);
        let mut text = if is_eos { String::new() } else { self.stop.push_text(&self.stream.push(id)?) };
        if self.stop.finished().is_none() && (is_eos || self.stop.limit_reached()) {
            // The end: flush the detokenizer's held bytes (they still go through the stop
            // check), then whatever the stop check held back.
            let tail = self.stream.finish()?;
            text.push_str(&self.stop.push_text(&tail));
            let reason = if is_eos { FinishReason::Eos } else { FinishReason::MaxTokens };
            text.push_str(&self.stop.finish(reason));
        }
        self.shown.push_str(&text);
        Ok(Step { text, finish: self.stop.finished().cloned() })
    }

    /// Why generation ended, once it has. With `max_new_tokens == 0` this is set from the
    /// start, so a loop written `while finished().is_none()` generates nothing.
    pub fn finished(&self) -> Option<&FinishReason> {
        self.stop.finished()
    }

    /// Tokens pushed before finishing, EOS included.
    pub fn generated_tokens(&self) -> usize {
        self.stop.generated_tokens()
    }

    /// All text shown so far.
    pub fn text(&self) -> &str {
        &self.shown
    }

    /// For a loop that stops for reasons of its own (an error, a cancelled request): the text
    /// still held back, without a finish reason. Held text never contains a stop string, but
    /// the detokenizer's tail is still checked for one.
    pub fn flush(&mut self) -> Result<String, GenerateError> {
        let tail = self.stream.finish()?;
        let mut text = self.stop.push_text(&tail);
        text.push_str(&self.stop.flush());
        self.shown.push_str(&text);
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::test_tokenizers::byte_level;

    /// Pushes ids until finished; returns the shown pieces and the reason.
    fn run(st: &mut StreamingText, ids: &[u32]) -> (Vec<String>, Option<FinishReason>) {
        let mut pieces = Vec::new();
        for &id in ids {
            let step = st.push(id).unwrap();
            pieces.push(step.text);
            if step.finish.is_some() {
                return (pieces, step.finish);
            }
        }
        (pieces, None)
    }

    #[test]
    fn stop_string_across_tokens_truncates_and_is_never_shown() {
        let tok = byte_level();
        let ids = tok.encode("Hello world. END and more", false).unwrap().get_ids().to_vec();
        let rules = StopRules::new(vec![], 100).with_stop_strings(["END"]);
        let mut st = StreamingText::new(&tok, rules, true);
        let (pieces, reason) = run(&mut st, &ids);
        assert_eq!(reason, Some(FinishReason::StopString("END".into())));
        assert_eq!(pieces.concat(), "Hello world. ");
        assert!(pieces.iter().all(|p| !p.contains('E')), "{pieces:?}");
        assert_eq!(st.text(), "Hello world. ");
        // Later pushes change nothing.
        let again = st.push(ids[0]).unwrap();
        assert_eq!(again, Step { text: String::new(), finish: reason });
    }

    #[test]
    fn eos_stops_without_being_shown_and_releases_held_text() {
        let tok = byte_level();
        let end = tok.token_to_id("<|end|>").unwrap();
        let mut ids = tok.encode("abc EN", false).unwrap().get_ids().to_vec();
        ids.extend([end, b'x' as u32]);
        let rules = StopRules::new(vec![end], 100).with_stop_strings(["END"]);
        // Keep special tokens, to show that the EOS is dropped all the same.
        let mut st = StreamingText::new(&tok, rules, false);
        let (pieces, reason) = run(&mut st, &ids);
        assert_eq!(reason, Some(FinishReason::Eos));
        assert_eq!(pieces.last().unwrap(), "EN");
        assert_eq!(pieces.concat(), "abc EN");
        assert_eq!(st.generated_tokens(), ids.len() - 1);
    }

    #[test]
    fn max_tokens_flushes_partial_characters_and_held_text() {
        let tok = byte_level();
        let ids = tok.encode("ok 日本", false).unwrap().get_ids().to_vec();
        let rules = StopRules::new(vec![], ids.len()).with_stop_strings(["本!"]);
        let mut st = StreamingText::new(&tok, rules, true);
        let (pieces, reason) = run(&mut st, &ids);
        assert_eq!(reason, Some(FinishReason::MaxTokens));
        assert_eq!(pieces.concat(), "ok 日本");
        assert_eq!(pieces.last().unwrap(), "日本");

        let mut st = StreamingText::new(&tok, StopRules::new(vec![], 0), true);
        assert_eq!(st.finished(), Some(&FinishReason::MaxTokens));
        assert_eq!(st.push(5).unwrap().text, "");
    }

    #[test]
    fn flush_returns_held_text_without_finishing() {
        let tok = byte_level();
        let rules = StopRules::new(vec![], 100).with_stop_strings(["END"]);
        let mut st = StreamingText::new(&tok, rules, true);
        let (pieces, _) = run(&mut st, &[b'a' as u32, b'E' as u32, 0xE6]);
        assert_eq!(pieces.concat(), "a");
        assert_eq!(st.flush().unwrap(), "E\u{FFFD}");
        assert!(st.finished().is_none());
        assert_eq!(st.text(), "aE\u{FFFD}");
    }
}
