//! Tiny tokenizers built in memory for the streaming tests: a GPT-2-style byte-level BPE and
//! SentencePiece-style vocabularies with the Metaspace and Llama-2 (byte-fallback) decoders.

use serde_json::{json, Value};
use tokenizers::Tokenizer;

/// GPT-2's byte-to-character table (printable bytes stand for themselves, the rest are
/// shifted past 255), which the ByteLevel decoder inverts.
fn byte_char(b: u8) -> char {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    if printable(b as u32) {
        return char::from(b);
    }
    let shifted = (0..b as u32).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shifted).unwrap()
}

fn byte_token(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_char(b)).collect()
}

fn tokenizer(model: Value, pre_tokenizer: Value, decoder: Value, added: &[&str]) -> Tokenizer {
    let next_id = model["vocab"].as_object().unwrap().len();
    let added: Vec<Value> = added
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": next_id + i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let json = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null,
        "decoder": decoder, "model": model,
    });
    Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap()
}

fn bpe(vocab: &[String], merges: &[String]) -> Value {
    let vocab: serde_json::Map<String, Value> = vocab.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
           "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
           "vocab": vocab, "merges": merges})
}

/// A GPT-2-style byte-level BPE: every byte is a token, plus merges chosen so that
/// characters split across tokens in awkward ways. The special token is `<|end|>`.
pub(crate) fn byte_level() -> Tokenizer {
    let mut vocab: Vec<String> = (0..=255u8).map(|b| byte_token(&[b])).collect();
    let pairs: [(&[u8], &[u8]); 13] = [
        (b"H", b"e"),
        (b"He", b"l"),
        (b"Hel", b"l"),
        (b"Hell", b"o"),
        (b" ", b"w"),
        (b" w", b"o"),
        (b" wo", b"r"),
        (b" wor", b"l"),
        (b" worl", b"d"),
        (&[0xC3], &[0xA9]), // é whole
        (&[0xE6], &[0x97]), // the first two bytes of 日
        (&[0xA5], &[0xE6]), // the end of 日 and the start of 本
        (&[0x9F], &[0x8E]), // the middle of 🎉
    ];
    let mut merges = Vec::new();
    for (a, b) in pairs {
        merges.push(format!("{} {}", byte_token(a), byte_token(b)));
        vocab.push(byte_token(&[a, b].concat()));
    }
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    tokenizer(bpe(&vocab, &merges), byte_level.clone(), byte_level, &["<|end|>"])
}

/// A SentencePiece-style vocabulary with byte-fallback tokens, decoded either by the
/// Metaspace decoder or by Llama-2's Replace/ByteFallback/Fuse/Strip chain.
pub(crate) fn sentencepiece(llama_decoder: bool) -> Tokenizer {
    let mut vocab: Vec<String> = ["▁Hello", "▁world", "!", "▁how", "▁are", "▁you", "?", "▁"].map(String::from).to_vec();
    vocab.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let metaspace = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
    let decoder = if llama_decoder {
        json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})
    } else {
        metaspace.clone()
    };
    tokenizer(bpe(&vocab, &[]), metaspace, decoder, &["</s>"])
}

pub(crate) fn sp_ids(tok: &Tokenizer, pieces: &[&str]) -> Vec<u32> {
    pieces.iter().map(|p| tok.token_to_id(p).unwrap()).collect()
}
