//! From a conversation to token ids: chat templates, media placeholders, the tokenizer.

pub mod placeholders;
pub mod positions;
pub mod template;
pub mod tokenizer;

pub use template::{ChatTemplate, Message, Part};
pub use tokenizer::TextTokenizer;
