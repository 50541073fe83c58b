//! Vision encoders: pixels in, one feature vector per patch out. They know nothing of text.

pub mod clip_vit;

pub use clip_vit::{ClipVisionConfig, ClipVisionTower};
