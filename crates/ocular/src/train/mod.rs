//! Training: the procedural scene dataset Ocular's own small Qwen2-VL-style model learns from.

pub mod scenes;
