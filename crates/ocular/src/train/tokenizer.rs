//! The built-in model's tokenizer: byte-level BPE (as Qwen2's) trained with the `tokenizers`
//! trainer on the scene dataset's own questions and answers, plus Qwen2-VL's special tokens,
//! so that any Qwen2-VL code path (ours or transformers') reads it.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use super::scenes::{Generator, SceneConfig, Task};
use crate::error::{Error, Result};

/// Qwen2-VL's special tokens, in its order: the ids follow the learned vocabulary.
pub const SPECIAL_TOKENS: [&str; 14] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
];

/// Qwen2-VL's chat template (system prompt by default, a vision span per image or video).
pub const CHAT_TEMPLATE: &str = include_str!("qwen2_vl_chat_template.jinja");

/// The same, except that a user turn's text comes before its images and videos, so that every
/// vision token can attend to the question (`[model] text_before_media`). In
/// scripts/experiments/binding.py a model this small, trained from scratch, learns to find
/// the object a question names within a few hundred steps this way, and stays at chance
/// with the image first.
pub const CHAT_TEMPLATE_TEXT_FIRST: &str = include_str!("qwen2_vl_chat_template_text_first.jinja");

/// Trains a tokenizer of `vocab_size` entries (special tokens included) on the questions and
/// answers of `examples` scene examples from the generator at `seed`. With `split_digits`,
/// every digit is a token of its own, as in Qwen2's tokenizer; without it BPE learns digit
/// groups as the corpus happens to favour them ("123" -> "1" "23", "456" -> "45" "6"), so
/// the same coordinate is spelled differently from box to box.
pub fn build(
    vocab_size: usize,
    seed: u64,
    scenes: &SceneConfig,
    examples: usize,
    split_digits: bool,
) -> Result<Tokenizer> {
    let err = |e: tokenizers::Error| Error::Tokenizer(format!("training the tokenizer: {e}"));
    // Every task's words, whatever subset or object range this run trains on.
    let full = SceneConfig { min_side: scenes.min_side, max_side: scenes.max_side, ..Default::default() };
    let mut generator = Generator::new(seed, full);
    let mut corpus = Vec::new();
    for i in 0..examples {
        let ex = generator.example(Task::ALL[i % Task::ALL.len()]);
        corpus.push(ex.question);
        corpus.push(ex.answer);
    }
    corpus.push("You are a helpful assistant.".to_string());
    corpus.push("system user assistant 0123456789 (,) yes no".to_string());

    let learned = vocab_size - SPECIAL_TOKENS.len();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(learned)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tokenizer = Tokenizer::new(BPE::default());
    let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    tokenizer.with_pre_tokenizer(Some(if split_digits {
        PreTokenizerWrapper::Sequence(Sequence::new(vec![Digits::new(true).into(), byte_level]))
    } else {
        byte_level
    }));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer.train(&mut trainer, corpus.into_iter()).map_err(err)?;
    let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)).collect();
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}

/// Writes tokenizer.json, tokenizer_config.json and `chat_template` as chat_template.jinja into `dir`.
pub fn save(tokenizer: &Tokenizer, chat_template: &str, dir: &Path) -> Result<()> {
    let io = |p: &Path, e: &dyn std::fmt::Display| Error::model_file(p, e);
    let path = dir.join("tokenizer.json");
    tokenizer.save(&path, false).map_err(|e| io(&path, &e))?;
    let config = serde_json::json!({
        "tokenizer_class": "Qwen2TokenizerFast",
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": null,
        "model_max_length": 32768,
        "errors": "replace",
        "clean_up_tokenization_spaces": false,
    });
    let path = dir.join("tokenizer_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).map_err(|e| io(&path, &e))?;
    let path = dir.join("chat_template.jinja");
    std::fs::write(&path, chat_template).map_err(|e| io(&path, &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_tokens_follow_the_vocabulary_and_text_round_trips() {
        let tok = build(400, 1, &SceneConfig::default(), 700, false).unwrap();
        assert_eq!(tok.get_vocab_size(true), 400);
        assert_eq!(tok.token_to_id("<|endoftext|>"), Some(386));
        assert_eq!(tok.token_to_id("<|video_pad|>"), Some(399));
        let text = "What colour is the square? <|box_start|>(12,998),(3,4)<|box_end|> café";
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(ids.get_ids(), false).unwrap(), text);
        // Scene words are whole tokens, not bytes.
        assert!(tok.encode("square", false).unwrap().get_ids().len() <= 2);
    }

    #[test]
    fn split_digits_spells_every_number_digit_by_digit() {
        let tok = build(400, 1, &SceneConfig::default(), 700, true).unwrap();
        let text = "<|box_start|>(123,456),(78,1000)<|box_end|>";
        let ids = tok.encode(text, false).unwrap();
        let pieces: Vec<&str> = ids.get_tokens().iter().map(String::as_str).collect();
        let digits: Vec<&str> = pieces.iter().copied().filter(|p| p.chars().any(|c| c.is_ascii_digit())).collect();
        assert_eq!(digits, ["1", "2", "3", "4", "5", "6", "7", "8", "1", "0", "0", "0"], "{pieces:?}");
        assert_eq!(tok.decode(ids.get_ids(), false).unwrap(), text);
        assert_eq!(
            tok.decode(tok.encode("There are 3 circles.", false).unwrap().get_ids(), false).unwrap(),
            "There are 3 circles."
        );
        // Without it, BPE at the built-in model's size merges digit groups.
        let merged = build(1024, 1, &SceneConfig::default(), 4000, false).unwrap();
        let tokens = merged.encode(text, false).unwrap().get_tokens().to_vec();
        assert!(tokens.iter().any(|t| t.len() > 1 && t.chars().all(|c| c.is_ascii_digit())), "{tokens:?}");
    }

    #[test]
    fn the_text_first_chat_template_puts_the_question_before_the_media() {
        use crate::prompt::{ChatTemplate, Message};
        let pad = "<|vision_start|><|image_pad|><|vision_end|>";
        let system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
        let user = [Message::user_with_media("Which has more?", 2, 0)];
        let render = |t: &str| ChatTemplate::new(t.to_string()).unwrap().render(&user, true, None, None).unwrap();
        assert_eq!(
            render(CHAT_TEMPLATE_TEXT_FIRST),
            format!("{system}<|im_start|>user\nWhich has more?{pad}{pad}<|im_end|>\n<|im_start|>assistant\n")
        );
        assert_eq!(
            render(CHAT_TEMPLATE),
            format!("{system}<|im_start|>user\n{pad}{pad}Which has more?<|im_end|>\n<|im_start|>assistant\n")
        );
    }
}
