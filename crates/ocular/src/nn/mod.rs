//! Building blocks shared by every vision tower and language model: activations, attention,
//! norms and linear layers. Written once here so that CLIP, Llama and later families compose
//! them instead of repeating them; `fused` holds the CPU training kernels they switch to when
//! gradients flow.

mod activation;
mod attention;
pub(crate) mod fused;
mod linear;
mod norm;

pub use activation::Activation;
pub use attention::{attention_weights, causal_mask, repeat_kv, scaled_dot_product_attention};
pub use linear::{linear, linear_b, Linear};
pub use norm::Norm;
