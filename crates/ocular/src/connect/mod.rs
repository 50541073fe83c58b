//! Connectors: how image features reach the language model.

pub mod merger;
pub mod projector;

pub use merger::PatchMerger;
pub use projector::{Projector, ProjectorKind};
