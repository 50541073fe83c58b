//! Qwen2's text configuration as Qwen2-VL and Qwen2.5-VL carry it (`Qwen2VLTextConfig`):
//! a Llama-shaped decoder with biased q/k/v projections and multimodal RoPE sections.
//! Hub checkpoints (transformers 4.x) keep these fields at the top level of config.json;
//! transformers 5 nests them under `text_config`.

use serde::Deserialize;

use super::decoder::DecoderSpec;
use super::rope::{RopeParameters, RotaryEmbedding};
use crate::nn::Activation;

fn d_act() -> Activation {
    Activation::Silu
}
fn d_eps() -> f64 {
    1e-6
}

#[derive(Debug, Clone, Deserialize)]
pub struct Qwen2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<RopeParameters>,
    pub rope_parameters: Option<RopeParameters>,
    pub tie_word_embeddings: Option<bool>,
}

impl Qwen2Config {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn rope(&self) -> RopeParameters {
        RopeParameters::resolve(self.rope_parameters.as_ref(), self.rope_scaling.as_ref(), self.rope_theta, 1_000_000.0)
    }

    pub fn rotary(&self) -> Result<RotaryEmbedding, String> {
        RotaryEmbedding::new(&self.rope(), self.head_dim())
    }

    /// The (t, h, w) split of the rotary frequency pairs.
    pub fn mrope_section(&self) -> Result<Vec<usize>, String> {
        let section = self
            .rope()
            .mrope_section
            .ok_or("text config has no `mrope_section` (in rope_parameters or rope_scaling)")?;
        let sum: usize = section.iter().sum();
        if sum * 2 != self.head_dim() {
            return Err(format!(
                "mrope_section {section:?} sums to {sum}, but head_dim / 2 is {}",
                self.head_dim() / 2
            ));
        }
        Ok(section)
    }

    pub fn decoder_spec(&self) -> DecoderSpec {
        DecoderSpec {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self.head_dim(),
            rms_norm_eps: self.rms_norm_eps,
            qkv_bias: true,
            o_bias: false,
            mlp_bias: false,
            hidden_act: self.hidden_act,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "text config: hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        self.decoder_spec().validate()?;
        self.mrope_section()?;
        self.rotary().map(|_| ())
    }
}
