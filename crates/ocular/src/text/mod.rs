//! Language models: they read and write tokens and know nothing of images.
//! A family hands them input embeddings (text and media already spliced) and positions.

pub mod decoder;
pub mod kv_cache;
pub mod llama;
pub mod qwen2;
pub mod rope;

pub use decoder::{CausalDecoder, DecoderSpec, Head, Rotation};
pub use kv_cache::KvCache;
pub use llama::LlamaConfig;
pub use qwen2::Qwen2Config;
pub use rope::{RopeParameters, RotaryEmbedding};
