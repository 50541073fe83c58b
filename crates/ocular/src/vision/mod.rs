//! Vision encoders: pixels in, one feature vector per patch out. They know nothing of text.

pub mod clip_vit;
pub mod qwen2_layout;
pub mod qwen2_vit;
pub mod qwen2_vit_config;

pub use clip_vit::{ClipVisionConfig, ClipVisionTower};
pub use qwen2_vit::Qwen2VisionTransformer;
pub use qwen2_vit_config::{Qwen25VisionConfig, Qwen2VisionConfig, VitSpec};
