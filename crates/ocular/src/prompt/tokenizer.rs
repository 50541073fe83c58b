//! The model's `tokenizer.json` (Hugging Face tokenizers), with the special tokens that
//! `tokenizer_config.json` names.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::load::ModelDir;

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// A special token in tokenizer_config.json: a string or an AddedToken object.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

impl TextTokenizer {
    pub fn load(dir: &ModelDir) -> Result<Self> {
        let path = dir.path("tokenizer.json");
        if !path.is_file() {
            return Err(Error::model_file(&path, "missing: the model folder needs tokenizer.json"));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::model_file(&path, format!("cannot read tokenizer: {e}")))?;
        let config = dir.json("tokenizer_config.json")?.unwrap_or(Value::Null);
        Ok(Self {
            inner,
            bos_token: token_text(config.get("bos_token")),
            eos_token: token_text(config.get("eos_token")),
        })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::model_file(path, format!("cannot read tokenizer: {e}")))?;
        Ok(Self { inner, bos_token: None, eos_token: None })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor
    /// (e.g. Llama's leading `<s>`), as transformers' `add_special_tokens` does.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Whether tokenizing the rendered chat `prompt` should add special tokens: not when the
    /// template already wrote the BOS token (transformers' rule).
    pub fn adds_special_tokens_to(&self, prompt: &str) -> bool {
        !self.bos_token.as_deref().is_some_and(|b| !b.is_empty() && prompt.starts_with(b))
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
