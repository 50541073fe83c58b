//! Training: the procedural scene dataset Ocular's own small Qwen2-VL-style model learns from.

pub mod batch;
pub mod config;
pub mod conversation_eval;
pub mod conversations;
pub mod dense;
pub mod eval;
pub mod folder;
mod heads;
pub mod inventory;
mod loss;
pub mod model;
pub mod object_box;
pub mod optim;
pub mod parallel;
pub mod pointer;
pub mod position;
mod progress;
mod question_aux;
pub mod scenes;
pub mod tokenizer;
pub mod trainer;
mod turns;
mod weights;
