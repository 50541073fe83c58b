//! Generation settings as Hugging Face ships them in `generation_config.json`, read with the
//! field names of transformers' `GenerationConfig` (transformers/generation/configuration_utils.py).
//!
//! Only the fields this engine acts on are kept; every other field is ignored, because the file
//! carries many (beam search, watermarking, cache settings) that do not concern us.

use std::path::Path;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::GenerateError;

/// The parts of `generation_config.json` that drive sampling and stopping. Every field is
/// optional: a missing (or `null`) field means "use transformers' default", which
/// [`SamplingParams::from_generation_config`](super::SamplingParams::from_generation_config)
/// applies.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerationConfig {
    #[serde(default, deserialize_with = "opt_token_id")]
    pub bos_token_id: Option<u32>,
    /// One id or a list in the file; always a list here (empty when absent).
    #[serde(default, deserialize_with = "token_ids")]
    pub eos_token_id: Vec<u32>,
    #[serde(default, deserialize_with = "opt_token_id")]
    pub pad_token_id: Option<u32>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub max_new_tokens: Option<usize>,
    /// Prompt plus generated tokens, as transformers counts it.
    pub max_length: Option<usize>,
}

impl GenerationConfig {
    /// Parses the JSON text of a `generation_config.json`.
    pub fn from_json_str(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Reads and parses a `generation_config.json`; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, GenerateError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| GenerateError::ReadConfig { path: path.to_path_buf(), source })?;
        Self::from_json_str(&text).map_err(|source| GenerateError::ParseConfig { path: path.to_path_buf(), source })
    }

    /// The end-of-sequence ids, in file order without repeats (empty when the file has none;
    /// then fall back to [`eos_ids_from_model_config`]).
    pub fn eos_ids(&self) -> Vec<u32> {
        dedup_keep_order(self.eos_token_id.clone())
    }

    /// How many tokens may be generated after a prompt of `prompt_len` tokens:
    /// `max_new_tokens` when set, which transformers lets override `max_length`; otherwise
    /// what `max_length` leaves after the prompt. `None` when the file sets neither (the caller
    /// picks a limit; transformers would fall back to `max_length = 20`).
    pub fn max_new_tokens_for(&self, prompt_len: usize) -> Option<usize> {
        self.max_new_tokens.or_else(|| self.max_length.map(|m| m.saturating_sub(prompt_len)))
    }
}

/// End-of-sequence ids from a model's `config.json`: `eos_token_id` at the top level, or, for
/// composite configs (LLaVA and friends) that keep it with the language model, in
/// `text_config`. Accepts one id or a list; negative or non-integer entries are skipped.
pub fn eos_ids_from_model_config(config: &Value) -> Vec<u32> {
    let top = config.get("eos_token_id").map(ids_from_value).unwrap_or_default();
    if !top.is_empty() {
        return top;
    }
    config.get("text_config").and_then(|t| t.get("eos_token_id")).map(ids_from_value).unwrap_or_default()
}

/// Int, list of ints, or null, as a list. Some older configs use `-1` to mean "none", so
/// negative values are dropped rather than rejected.
fn ids_from_value(v: &Value) -> Vec<u32> {
    let one = |v: &Value| v.as_i64().and_then(|i| u32::try_from(i).ok());
    let ids = match v {
        Value::Array(items) => items.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    };
    dedup_keep_order(ids)
}

fn dedup_keep_order(ids: Vec<u32>) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// A single id that may be null or negative (meaning none).
fn opt_token_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Option::<i64>::deserialize(d)?;
    Ok(v.and_then(|i| u32::try_from(i).ok()))
}

/// An id or a list of ids (or null); see [`ids_from_value`].
fn token_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(i64),
        Many(Vec<i64>),
    }
    let ids = match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(i)) => vec![i],
        Some(OneOrMany::Many(v)) => v,
    };
    Ok(ids.into_iter().filter_map(|i| u32::try_from(i).ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_typical_file_and_ignores_unknown_fields() {
        let c = GenerationConfig::from_json_str(
            r#"{
                "_from_model_config": true,
                "bos_token_id": 151643,
                "eos_token_id": [151645, 151643],
                "pad_token_id": 151643,
                "do_sample": true,
                "temperature": 0.7,
                "top_k": 20,
                "top_p": 0.8,
                "repetition_penalty": 1.05,
                "transformers_version": "4.45.0",
                "num_beams": 1,
                "cache_implementation": "hybrid"
            }"#,
        )
        .unwrap();
        assert_eq!(c.bos_token_id, Some(151643));
        assert_eq!(c.eos_ids(), vec![151645, 151643]);
        assert_eq!(c.pad_token_id, Some(151643));
        assert_eq!(c.do_sample, Some(true));
        assert_eq!(c.temperature, Some(0.7));
        assert_eq!(c.top_k, Some(20));
        assert_eq!(c.top_p, Some(0.8));
        assert_eq!(c.min_p, None);
        assert_eq!(c.repetition_penalty, Some(1.05));
        assert_eq!(c.max_new_tokens, None);
    }

    #[test]
    fn eos_as_single_int_null_or_missing() {
        let one = GenerationConfig::from_json_str(r#"{"eos_token_id": 2}"#).unwrap();
        assert_eq!(one.eos_ids(), vec![2]);
        let null = GenerationConfig::from_json_str(r#"{"eos_token_id": null}"#).unwrap();
        assert!(null.eos_ids().is_empty());
        let missing = GenerationConfig::from_json_str("{}").unwrap();
        assert_eq!(missing, GenerationConfig::default());
    }

    #[test]
    fn negative_ids_mean_none_and_integer_floats_are_accepted() {
        let c =
            GenerationConfig::from_json_str(r#"{"pad_token_id": -1, "eos_token_id": [2, -1, 2], "temperature": 1}"#)
                .unwrap();
        assert_eq!(c.pad_token_id, None);
        assert_eq!(c.eos_ids(), vec![2]);
        assert_eq!(c.temperature, Some(1.0));
    }

    #[test]
    fn wrong_types_are_rejected() {
        assert!(GenerationConfig::from_json_str(r#"{"top_k": "many"}"#).is_err());
        assert!(GenerationConfig::from_json_str(r#"{"eos_token_id": "2"}"#).is_err());
    }

    #[test]
    fn max_new_tokens_overrides_max_length() {
        let both = GenerationConfig { max_new_tokens: Some(64), max_length: Some(100), ..Default::default() };
        assert_eq!(both.max_new_tokens_for(30), Some(64));
        let len = GenerationConfig { max_length: Some(100), ..Default::default() };
        assert_eq!(len.max_new_tokens_for(30), Some(70));
        assert_eq!(len.max_new_tokens_for(130), Some(0));
        assert_eq!(GenerationConfig::default().max_new_tokens_for(5), None);
    }

    #[test]
    fn eos_from_model_config_top_level_or_text_config() {
        assert_eq!(eos_ids_from_model_config(&json!({"eos_token_id": 151645})), vec![151645]);
        assert_eq!(eos_ids_from_model_config(&json!({"eos_token_id": [1, 2]})), vec![1, 2]);
        let llava = json!({"model_type": "llava", "text_config": {"eos_token_id": 2}});
        assert_eq!(eos_ids_from_model_config(&llava), vec![2]);
        let null_top = json!({"eos_token_id": null, "text_config": {"eos_token_id": [7]}});
        assert_eq!(eos_ids_from_model_config(&null_top), vec![7]);
        assert!(eos_ids_from_model_config(&json!({"vocab_size": 10})).is_empty());
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("ocular-genconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.json");
        let e = GenerationConfig::from_file(&missing).unwrap_err().to_string();
        assert!(e.starts_with(&missing.display().to_string()), "{e}");
        assert!(e.contains("cannot read generation config"), "{e}");

        let bad = dir.join("generation_config.json");
        std::fs::write(&bad, r#"{"top_p": "high"}"#).unwrap();
        let e = GenerationConfig::from_file(&bad).unwrap_err().to_string();
        assert!(e.contains("generation_config.json: invalid generation config"), "{e}");
        assert!(!e.contains('\n'), "{e}");

        std::fs::write(&bad, r#"{"max_new_tokens": 12}"#).unwrap();
        assert_eq!(GenerationConfig::from_file(&bad).unwrap().max_new_tokens, Some(12));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
