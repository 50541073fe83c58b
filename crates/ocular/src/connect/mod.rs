//! Connectors: how image features reach the language model.

pub mod projector;

pub use projector::{Projector, ProjectorKind};
