//! Ocular: vision-language models in Rust.
//!
//! Follow an image through the modules and you have followed the architecture:
//! [`image`] (decode, preprocess) -> [`vision`] (encoder) -> [`connect`] (projector) ->
//! [`text`] (language model) -> [`generate`] (sampling, streaming text).
//! [`models`] is where the parts meet, one folder per family; [`prompt`] turns a
//! conversation into token ids; [`load`] reads model folders.

pub mod connect;
pub mod error;
pub mod generate;
pub mod ground;
pub mod image;
pub mod load;
pub mod models;
pub mod nn;
pub mod prompt;
pub mod rng;
pub mod text;
pub mod train;
pub mod vision;

pub use error::{Error, Result};
pub mod pipeline;

pub use ::image::RgbImage;
pub use candle_core::{DType, Device};
pub use pipeline::Pipeline;
