//! Errors of the library, each a single line that names what was wrong and where.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),

    #[error("{}: {message}", path.display())]
    ModelFile { path: PathBuf, message: String },

    #[error("{}: unsupported model_type {found:?}; supported: {}", path.display(), supported.join(", "))]
    UnsupportedModel { path: PathBuf, found: String, supported: Vec<&'static str> },

    #[error("{}: invalid config: {message}", path.display())]
    Config { path: PathBuf, message: String },

    #[error("weights in {}: {message}", dir.display())]
    Weights { dir: PathBuf, message: String },

    #[error("the prompt has {placeholders} {token} placeholder(s) but {media} {kind}(s) were given")]
    PlaceholderMismatch { placeholders: usize, media: usize, token: String, kind: &'static str },

    #[error(transparent)]
    Generate(#[from] crate::generate::GenerateError),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    Template(String),

    #[error("{0}")]
    Invalid(String),

    #[error("tensor computation failed: {}", first_line(.0))]
    Tensor(#[from] candle_core::Error),
}

/// candle appends a backtrace to its messages when RUST_BACKTRACE is set; users get one line.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

impl Error {
    /// A tensor-loading failure; candle may append a backtrace, which is not for users.
    pub fn weights(dir: &std::path::Path, e: &candle_core::Error) -> Self {
        let message = first_line(e);
        Self::Weights { dir: dir.to_path_buf(), message }
    }

    pub fn model_file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::ModelFile { path: path.into(), message: message.to_string() }
    }
}
