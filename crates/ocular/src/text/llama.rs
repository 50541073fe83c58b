//! Llama's configuration (`LlamaConfig` in transformers, `model_type: "llama"`): the defaults
//! are transformers', because LLaVA checkpoints often store only the fields that differ.

use serde::Deserialize;

use super::decoder::DecoderSpec;
use super::rope::{RopeParameters, RotaryEmbedding};
use crate::nn::Activation;

fn d_vocab() -> usize {
    32000
}
fn d_hidden() -> usize {
    4096
}
fn d_intermediate() -> usize {
    11008
}
fn d_layers() -> usize {
    32
}
fn d_heads() -> usize {
    32
}
fn d_act() -> Activation {
    Activation::Silu
}
fn d_max_pos() -> usize {
    2048
}
fn d_eps() -> f64 {
    1e-6
}

#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    pub model_type: Option<String>,
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<RopeParameters>,
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    pub tie_word_embeddings: Option<bool>,
    pub eos_token_id: Option<serde_json::Value>,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn rope(&self) -> RopeParameters {
        RopeParameters::resolve(self.rope_parameters.as_ref(), self.rope_scaling.as_ref(), self.rope_theta, 10_000.0)
    }

    pub fn rotary(&self) -> Result<RotaryEmbedding, String> {
        RotaryEmbedding::new(&self.rope(), self.head_dim())
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
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            hidden_act: self.hidden_act,
        }
    }

    /// Checks transformers would make at construction, reported before any weight is read.
    pub fn validate(&self) -> Result<(), String> {
        self.decoder_spec().validate()?;
        self.rotary().map(|_| ()).map_err(|e| format!("text config: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_hub_config_takes_transformers_defaults() {
        let c: LlamaConfig = serde_json::from_str(r#"{"model_type":"llama","rope_scaling":null}"#).unwrap();
        assert_eq!((c.hidden_size, c.num_hidden_layers, c.head_dim(), c.vocab_size), (4096, 32, 128, 32000));
        assert_eq!(c.decoder_spec().num_kv_heads, 32);
        assert_eq!(c.rope().theta(), 10_000.0);
    }

    #[test]
    fn bad_head_counts_are_named() {
        let c: LlamaConfig =
            serde_json::from_str(r#"{"hidden_size":64,"num_attention_heads":4,"num_key_value_heads":3}"#).unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("num_key_value_heads (3)"), "{e}");
    }
}
