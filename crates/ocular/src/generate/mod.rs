//! The model-independent parts of generation: settings from `generation_config.json`, the
//! sampler (transformers' logits processors, in their order), stop rules and streaming
//! detokenization. The loop that calls a model lives elsewhere and uses these pieces:
//!
//! ```text
//! let params = SamplingParams::from_generation_config(&gen_config, seed);
//! let mut sampler = Sampler::new(params);
//! let rules = StopRules::new(gen_config.eos_ids(), max_new_tokens).with_stop_strings(stops);
//! let mut text = StreamingText::new(&tokenizer, rules, true);
//! let mut ids = prompt_ids.clone(); // repetition penalty looks at the prompt too
//! while text.finished().is_none() {
//!     let logits = model.step(...)?; // last position, as f32
//!     let id = sampler.sample(&logits, &ids);
//!     ids.push(id);
//!     let step = text.push(id)?;
//!     print!("{}", step.text);
//! }
//! ```
//!
//! This module depends on nothing else in the crate, only on std, `tokenizers`, `serde`,
//! `serde_json` and `thiserror`, so it can be built and tested on its own.

pub mod config;
mod logits;
pub mod sampler;
pub mod stop;
pub mod stream;
pub mod streaming;
#[cfg(test)]
mod test_tokenizers;

pub use crate::rng::Rng;
pub use config::{eos_ids_from_model_config, GenerationConfig};
pub use sampler::{Sampler, SamplingOverrides, SamplingParams};
pub use stop::{FinishReason, StopChecker, StopRules};
pub use stream::TextStream;
pub use streaming::{Step, StreamingText};

use std::path::PathBuf;

/// What can go wrong in the generation layer. Each message is one line that says which file,
/// parameter or token was at fault.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{}: cannot read generation config: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: invalid generation config: {source}", path.display())]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("sampling parameter `{name}` is {value}; expected {expected}")]
    InvalidSampling { name: &'static str, value: String, expected: &'static str },

    #[error("tokenizer: cannot decode token {id}: {message}")]
    Decode { id: u32, message: String },
}
