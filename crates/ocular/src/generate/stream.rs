//! Incremental detokenization: token ids in, printable text out, one token at a time.
//!
//! Decoding tokens one by one is wrong in two ways: a byte-level token may hold part of a
//! UTF-8 character, and SentencePiece/Metaspace decoders drop the leading space of the first
//! token they see. So, like text-generation-inference's `decode_token` and candle's
//! `TokenOutputStream`, each step decodes a short window of recent tokens twice, without and
//! with the new ones, and emits the difference; text ending in U+FFFD (an unfinished
//! character) is held until the next token completes it.
//! [`StreamingText`](super::StreamingText) adds stop rules on top, for a generation loop.

use tokenizers::Tokenizer;

use super::GenerateError;

const REPLACEMENT: char = '\u{FFFD}';

/// Turns a stream of token ids into a stream of text whose concatenation equals decoding all
/// ids at once (for decoders whose output for a run of tokens does not depend on what
/// follows, which covers byte-level BPE, Metaspace and byte-fallback).
pub struct TextStream<'t> {
    tokenizer: &'t Tokenizer,
    skip_special_tokens: bool,
    /// The window: tokens already shown that serve as context (`ids[..read]`), then tokens
    /// not yet shown.
    ids: Vec<u32>,
    read: usize,
    /// `ids[..read]` decoded: the text the next decode must start with.
    prefix_text: String,
}

impl<'t> TextStream<'t> {
    /// A stream with no context. The first token decodes as if it began the text, so a
    /// Metaspace tokenizer drops its leading space, as `tokenizer.decode(generated_ids)` does.
    pub fn new(tokenizer: &'t Tokenizer, skip_special_tokens: bool) -> Self {
        Self { tokenizer, skip_special_tokens, ids: Vec::new(), read: 0, prefix_text: String::new() }
    }

    /// Adds one token; returns the text it completes (often empty: a partial character, a
    /// skipped special token).
    pub fn push(&mut self, id: u32) -> Result<String, GenerateError> {
        self.ids.push(id);
        let text = self.decode(&self.ids, id)?;
        if text.len() <= self.prefix_text.len() || text.ends_with(REPLACEMENT) {
            return Ok(String::new());
        }
        let new = suffix_after(&self.prefix_text, &text).to_string();
        // Slide the window: what was unread becomes the context for the next token. Its
        // first token starts a character, since the text up to it ended with a whole one.
        self.ids.drain(..self.read);
        self.read = self.ids.len();
        self.prefix_text = self.decode(&self.ids, id)?;
        Ok(new)
    }

    /// Emits whatever is still held back, even an unfinished character (as U+FFFD, which is
    /// what decoding all ids at once gives). The stream then starts over without context.
    pub fn finish(&mut self) -> Result<String, GenerateError> {
        let out = match self.ids.last() {
            Some(&last) if self.read < self.ids.len() => {
                let text = self.decode(&self.ids, last)?;
                suffix_after(&self.prefix_text, &text).to_string()
            }
            _ => String::new(),
        };
        self.ids.clear();
        self.read = 0;
        self.prefix_text.clear();
        Ok(out)
    }

    fn decode(&self, ids: &[u32], id: u32) -> Result<String, GenerateError> {
        self.tokenizer
            .decode(ids, self.skip_special_tokens)
            .map_err(|e| GenerateError::Decode { id, message: e.to_string() })
    }
}

/// The part of `text` after `prefix`. Decoders used by chat models only append, so `text`
/// starts with `prefix`; if one ever rewrites earlier text, what was shown cannot be taken
/// back, and the output resumes after the longest common prefix.
fn suffix_after<'a>(prefix: &str, text: &'a str) -> &'a str {
    if let Some(rest) = text.strip_prefix(prefix) {
        return rest;
    }
    let common = prefix
        .char_indices()
        .zip(text.chars())
        .find(|((_, a), b)| a != b)
        .map_or(prefix.len().min(text.len()), |((i, _), _)| i);
    &text[common..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::test_tokenizers::{byte_level, sentencepiece, sp_ids};

    fn stream_all(tok: &Tokenizer, ids: &[u32], skip: bool) -> Vec<String> {
        let mut s = TextStream::new(tok, skip);
        let mut out: Vec<String> = ids.iter().map(|&id| s.push(id).unwrap()).collect();
        out.push(s.finish().unwrap());
        out
    }

    #[test]
    fn multibyte_characters_split_over_tokens_stream_intact() {
        let tok = byte_level();
        let text = "héllo 日本語 🎉";
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        // The test only means something if some tokens hold partial characters.
        let partial = ids.iter().filter(|&&id| tok.decode(&[id], false).unwrap().contains(REPLACEMENT));
        assert!(partial.count() >= 4, "{ids:?}");
        let pieces = stream_all(&tok, &ids, true);
        assert!(pieces.iter().all(|p| !p.contains(REPLACEMENT)), "{pieces:?}");
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap());
        // One token ends 日 and starts 本, so 日 waits until 本 is complete.
        assert!(pieces.contains(&"日本".to_string()), "{pieces:?}");
    }

    #[test]
    fn concatenation_equals_full_decode() {
        let tok = byte_level();
        let end = tok.token_to_id("<|end|>").unwrap();
        for text in ["Hello world", " Hello  world\n\n", "naïve café — ½ ∑ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 👩‍👩‍👧", "x"]
        {
            let mut ids = tok.encode(text, false).unwrap().get_ids().to_vec();
            ids.insert(ids.len() / 2, end);
            for skip in [true, false] {
                let pieces = stream_all(&tok, &ids, skip);
                assert_eq!(pieces.concat(), tok.decode(&ids, skip).unwrap(), "{text:?} skip={skip}");
            }
        }
    }

    #[test]
    fn special_tokens_skipped_when_asked() {
        let tok = byte_level();
        let end = tok.token_to_id("<|end|>").unwrap();
        let ids = [tok.token_to_id("Hello").unwrap(), end];
        assert_eq!(stream_all(&tok, &ids, true).concat(), "Hello");
        assert_eq!(stream_all(&tok, &ids, false).concat(), "Hello<|end|>");
    }

    #[test]
    fn metaspace_keeps_spaces_between_tokens() {
        let tok = sentencepiece(false);
        let ids = sp_ids(&tok, &["▁Hello", "▁world", "!", "▁how", "▁are", "▁you", "?"]);
        let pieces = stream_all(&tok, &ids, true);
        assert_eq!(pieces, ["Hello", " world", "!", " how", " are", " you", "?", ""]);
        assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap());
        // Decoding one token at a time would lose every space.
        let naive: String = ids.iter().map(|&id| tok.decode(&[id], true).unwrap()).collect();
        assert_eq!(naive, "Helloworld!howareyou?");
    }

    #[test]
    fn byte_fallback_characters_are_held_until_complete() {
        let tok = sentencepiece(true);
        let ids =
            sp_ids(&tok, &["▁", "<0xE6>", "<0x97>", "<0xA5>", "▁Hello", "<0xF0>", "<0x9F>", "<0x8E>", "<0x89>", "!"]);
        let pieces = stream_all(&tok, &ids, true);
        assert_eq!(pieces, ["", "", "", "日", " Hello", "", "", "", "🎉", "!", ""]);
        assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap());
    }

    #[test]
    fn finish_flushes_an_unfinished_character_like_a_full_decode() {
        let tok = byte_level();
        let ids = [b'a' as u32, 0xF0, 0x9F];
        let pieces = stream_all(&tok, &ids, true);
        assert_eq!(pieces, ["a", "", "", "\u{FFFD}"]);
        assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap());
    }

    #[test]
    fn suffix_after_handles_rewrites() {
        assert_eq!(suffix_after("abc", "abcdef"), "def");
        assert_eq!(suffix_after("abX", "abcdef"), "cdef");
        assert_eq!(suffix_after("日本", "日曜"), "曜");
        assert_eq!(suffix_after("abcd", "ab"), "");
    }
}
