//! When generation ends and how much of the text the user may see: end-of-sequence tokens,
//! stop strings (matched on text, so they may span tokens) and a token budget.
//!
//! Text is held back while it could still be the start of a stop string, so that a caller
//! printing as it goes never shows a stop string, or part of one, that later gets cut.

/// What ends a generation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopRules {
    /// Tokens that end the sequence; they are never shown.
    pub eos_ids: Vec<u32>,
    /// Texts that end the sequence; the output stops just before the first one found.
    pub stop_strings: Vec<String>,
    /// Tokens to generate at most, EOS included; `usize::MAX` for no limit.
    pub max_new_tokens: usize,
}

impl StopRules {
    pub fn new(eos_ids: Vec<u32>, max_new_tokens: usize) -> Self {
        Self { eos_ids, stop_strings: Vec::new(), max_new_tokens }
    }

    /// Adds stop strings; empty ones are skipped (they would match before any text).
    pub fn with_stop_strings<S: Into<String>>(mut self, stops: impl IntoIterator<Item = S>) -> Self {
        self.stop_strings.extend(stops.into_iter().map(Into::into).filter(|s| !s.is_empty()));
        self
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token was generated.
    Eos,
    /// The text contained this stop string.
    StopString(String),
    /// `max_new_tokens` tokens were generated.
    MaxTokens,
}

/// Applies [`StopRules`] step by step. Token ids and text arrive separately because the text
/// of a token is only known after detokenizing it, and an EOS token is never detokenized;
/// [`StreamingText`](super::StreamingText) does that sequencing for a generation loop.
#[derive(Debug, Clone)]
pub struct StopChecker {
    rules: StopRules,
    generated: usize,
    /// Text received but not yet released: the longest tail that a stop string starts with.
    held: String,
    finished: Option<FinishReason>,
}

impl StopChecker {
    /// A checker with nothing generated. With `max_new_tokens == 0` it starts finished.
    pub fn new(mut rules: StopRules) -> Self {
        rules.stop_strings.retain(|s| !s.is_empty());
        let finished = (rules.max_new_tokens == 0).then_some(FinishReason::MaxTokens);
        Self { rules, generated: 0, held: String::new(), finished }
    }

    pub fn rules(&self) -> &StopRules {
        &self.rules
    }

    /// Why generation ended, once it has.
    pub fn finished(&self) -> Option<&FinishReason> {
        self.finished.as_ref()
    }

    /// Tokens counted so far by [`on_token`](Self::on_token), EOS included.
    pub fn generated_tokens(&self) -> usize {
        self.generated
    }

    /// Counts one generated token and says whether it is an EOS (whose text must not be
    /// shown; call [`finish`](Self::finish) with [`FinishReason::Eos`]).
    pub fn on_token(&mut self, id: u32) -> bool {
        self.generated += 1;
        self.rules.is_eos(id)
    }

    /// Whether the token budget is spent.
    pub fn limit_reached(&self) -> bool {
        self.generated >= self.rules.max_new_tokens
    }

    /// Takes newly decoded text and returns what can be shown now. If a stop string appears,
    /// generation is finished and only the text before it is returned; once finished, all
    /// further text is dropped.
    pub fn push_text(&mut self, text: &str) -> String {
        if self.finished.is_some() {
            return String::new();
        }
        self.held.push_str(text);
        // Earlier text was released only once no stop string could start in it, so any match
        // lies within `held`.
        if let Some((at, stop)) = self.first_stop() {
            let out = self.held[..at].to_string();
            self.held.clear();
            self.finished = Some(FinishReason::StopString(stop));
            return out;
        }
        let keep_from = self.partial_stop_start();
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        out
    }

    /// Ends generation for `reason` (unless a stop string already ended it) and returns the
    /// held-back text, which can no longer turn into a stop string.
    pub fn finish(&mut self, reason: FinishReason) -> String {
        if self.finished.is_none() {
            self.finished = Some(reason);
        }
        std::mem::take(&mut self.held)
    }

    /// Returns the held-back text without finishing, for a loop that stops for reasons of
    /// its own (an error, a client that went away).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Byte offset and text of the earliest stop string in `held` (the first listed wins
    /// when two start at the same place).
    fn first_stop(&self) -> Option<(usize, String)> {
        let mut best: Option<(usize, &String)> = None;
        for s in &self.rules.stop_strings {
            if let Some(at) = self.held.find(s.as_str()) {
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, s));
                }
            }
        }
        best.map(|(at, s)| (at, s.clone()))
    }

    /// Start of the longest tail of `held` that is a proper prefix of some stop string
    /// (`held.len()` when there is none). Only char boundaries are tried, so the split is
    /// always valid UTF-8.
    fn partial_stop_start(&self) -> usize {
        let longest = self.rules.stop_strings.iter().map(String::len).max().unwrap_or(0);
        // A proper prefix is at most `longest - 1` bytes, which bounds the tails to try.
        let min_start = self.held.len().saturating_sub(longest.saturating_sub(1));
        self.held
            .char_indices()
            .map(|(i, _)| i)
            .filter(|&i| i >= min_start)
            .find(|&i| {
                let tail = &self.held[i..];
                self.rules.stop_strings.iter().any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(stops: &[&str]) -> StopChecker {
        StopChecker::new(StopRules::new(vec![0], usize::MAX).with_stop_strings(stops.iter().copied()))
    }

    /// Feeds pieces, returning everything shown.
    fn feed(c: &mut StopChecker, pieces: &[&str]) -> String {
        pieces.iter().map(|p| c.push_text(p)).collect()
    }

    #[test]
    fn eos_is_recognised_and_counted() {
        let mut c = StopChecker::new(StopRules::new(vec![2, 7], 10));
        assert!(!c.on_token(5));
        assert!(c.on_token(7));
        assert_eq!(c.generated_tokens(), 2);
        assert_eq!(c.finish(FinishReason::Eos), "");
        assert_eq!(c.finished(), Some(&FinishReason::Eos));
    }

    #[test]
    fn stop_string_within_one_piece_truncates() {
        let mut c = checker(&["</s>"]);
        assert_eq!(c.push_text("hello</s>world"), "hello");
        assert_eq!(c.finished(), Some(&FinishReason::StopString("</s>".into())));
        assert_eq!(c.push_text("more"), "");
        assert_eq!(c.finish(FinishReason::MaxTokens), "");
        assert_eq!(c.finished(), Some(&FinishReason::StopString("</s>".into())));
    }

    #[test]
    fn stop_string_split_across_pieces_is_never_shown() {
        let mut c = checker(&["STOP"]);
        assert_eq!(c.push_text("abc S"), "abc ");
        assert_eq!(c.push_text("T"), "");
        assert_eq!(c.push_text("OP and more"), "");
        assert_eq!(c.finished(), Some(&FinishReason::StopString("STOP".into())));
    }

    #[test]
    fn held_text_is_released_when_it_diverges() {
        let mut c = checker(&["STOP"]);
        assert_eq!(c.push_text("ST"), "");
        assert_eq!(c.push_text("AR"), "STAR");
        // "SSTOP": the first S is released once the tail "ST" can no longer extend "SS".
        let mut c = checker(&["STOP"]);
        assert_eq!(feed(&mut c, &["S", "S", "T"]), "S");
        assert_eq!(c.push_text("OP"), "");
        assert!(c.finished().is_some());
    }

    #[test]
    fn finish_releases_a_partial_match() {
        let mut c = checker(&["\n\nUser:"]);
        assert_eq!(c.push_text("done.\n\nUs"), "done.");
        assert_eq!(c.finish(FinishReason::MaxTokens), "\n\nUs");
        assert_eq!(c.finished(), Some(&FinishReason::MaxTokens));
    }

    #[test]
    fn earliest_of_several_stop_strings_wins() {
        let mut c = checker(&["world", "lo w"]);
        assert_eq!(c.push_text("hello world"), "hel");
        assert_eq!(c.finished(), Some(&FinishReason::StopString("lo w".into())));
        // Same start: the first listed.
        let mut c = checker(&["ab", "abc"]);
        assert_eq!(c.push_text("xabc"), "x");
        assert_eq!(c.finished(), Some(&FinishReason::StopString("ab".into())));
    }

    #[test]
    fn multibyte_stop_strings_and_text() {
        let mut c = checker(&["。終"]);
        assert_eq!(c.push_text("日本語。"), "日本語");
        assert_eq!(c.push_text("終わり"), "");
        assert_eq!(c.finished(), Some(&FinishReason::StopString("。終".into())));
        // A held "é" is released once the next character rules the stop string out.
        let mut c = checker(&["é!"]);
        assert_eq!(c.push_text("café"), "caf");
        assert_eq!(c.push_text("s"), "és");
    }

    #[test]
    fn no_stop_strings_passes_text_through() {
        let mut c = checker(&[]);
        assert_eq!(c.push_text("anything"), "anything");
        let mut c = checker(&[""]);
        assert_eq!(c.push_text("empty stop strings are ignored"), "empty stop strings are ignored");
        assert!(c.finished().is_none());
    }

    #[test]
    fn token_budget() {
        let mut c = StopChecker::new(StopRules::new(vec![], 2));
        c.on_token(1);
        assert!(!c.limit_reached());
        c.on_token(1);
        assert!(c.limit_reached());
        assert!(StopChecker::new(StopRules::new(vec![], 0)).finished() == Some(&FinishReason::MaxTokens));
    }

    #[test]
    fn flush_does_not_finish() {
        let mut c = checker(&["STOP"]);
        assert_eq!(c.push_text("xS"), "x");
        assert_eq!(c.flush(), "S");
        assert!(c.finished().is_none());
    }
}
