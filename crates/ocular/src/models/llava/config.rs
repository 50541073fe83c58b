//! `LlavaConfig`: a CLIP vision config, a Llama text config and how the two are joined.
//! Defaults are transformers' (LLaVA-1.5's CLIP ViT-L/14-336 when `vision_config` is sparse).

use serde::Deserialize;

use crate::connect::ProjectorKind;
use crate::nn::Activation;
use crate::text::LlamaConfig;
use crate::vision::ClipVisionConfig;

/// Whether the CLS token's feature reaches the language model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SelectStrategy {
    /// Drop CLS: patch features only.
    #[default]
    Default,
    Full,
}

/// `vision_feature_layer`: one hidden-state index, or several concatenated on the feature axis.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FeatureLayers {
    One(i64),
    Many(Vec<i64>),
}

impl Default for FeatureLayers {
    fn default() -> Self {
        Self::One(-2)
    }
}

impl FeatureLayers {
    pub fn list(&self) -> Vec<i64> {
        match self {
            Self::One(i) => vec![*i],
            Self::Many(v) => v.clone(),
        }
    }
}

fn d_vision() -> ClipVisionConfig {
    serde_json::from_value(serde_json::json!({
        "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
        "num_attention_heads": 16, "image_size": 336, "patch_size": 14
    }))
    .expect("static LLaVA vision defaults parse")
}
fn d_text() -> LlamaConfig {
    serde_json::from_str("{}").expect("static Llama defaults parse")
}
fn d_image_token() -> u32 {
    32000
}
fn d_act() -> Activation {
    Activation::Gelu
}
fn d_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct LlavaConfig {
    #[serde(default = "d_vision")]
    pub vision_config: ClipVisionConfig,
    #[serde(default = "d_text")]
    pub text_config: LlamaConfig,
    #[serde(default = "d_image_token", alias = "image_token_id")]
    pub image_token_index: u32,
    #[serde(default = "d_act")]
    pub projector_hidden_act: Activation,
    #[serde(default)]
    pub vision_feature_select_strategy: SelectStrategy,
    #[serde(default)]
    pub vision_feature_layer: FeatureLayers,
    #[serde(default = "d_true")]
    pub multimodal_projector_bias: bool,
    /// Original LLaVA's name for the projector design; HF checkpoints omit it (MLP).
    #[serde(default)]
    pub mm_projector_type: ProjectorKind,
    pub tie_word_embeddings: Option<bool>,
}

impl LlavaConfig {
    pub fn text_config_model_type(&self) -> &str {
        self.text_config.model_type.as_deref().unwrap_or("llama")
    }

    pub fn tie_word_embeddings(&self) -> bool {
        self.tie_word_embeddings.or(self.text_config.tie_word_embeddings).unwrap_or(false)
    }

    /// Hidden-state indices (0 = embeddings) of the layers the projector reads.
    pub fn feature_layers(&self) -> Result<Vec<usize>, String> {
        let n = self.vision_config.num_hidden_layers as i64 + 1;
        self.vision_feature_layer
            .list()
            .into_iter()
            .map(|l| {
                let i = if l < 0 { n + l } else { l };
                if (0..n).contains(&i) {
                    Ok(i as usize)
                } else {
                    Err(format!("vision_feature_layer {l} is out of range for a vision tower of {} layers", n - 1))
                }
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        self.vision_config.validate()?;
        self.text_config.validate()?;
        let layers = self.feature_layers()?;
        if layers.is_empty() {
            return Err("vision_feature_layer is an empty list".into());
        }
        if self.image_token_index as usize >= self.text_config.vocab_size {
            return Err(format!(
                "image_token_index {} is outside the vocabulary of {}",
                self.image_token_index, self.text_config.vocab_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_and_v5_fields_both_parse() {
        let hub: LlavaConfig = serde_json::from_str(
            r#"{"image_token_index": 7, "vision_feature_layer": -2,
            "text_config": {"vocab_size": 100}}"#,
        )
        .unwrap();
        let v5: LlavaConfig = serde_json::from_str(
            r#"{"image_token_id": 7, "vision_feature_layer": [-2, -1],
            "vision_feature_select_strategy": "full", "text_config": {"vocab_size": 100}}"#,
        )
        .unwrap();
        assert_eq!((hub.image_token_index, v5.image_token_index), (7, 7));
        assert_eq!(hub.feature_layers().unwrap(), vec![23]);
        assert_eq!(v5.feature_layers().unwrap(), vec![23, 24]);
        assert_eq!(v5.vision_feature_select_strategy, SelectStrategy::Full);
        assert_eq!(hub.vision_config.image_size, 336);
        assert!(hub.validate().is_ok());
    }

    #[test]
    fn out_of_range_feature_layer_is_named() {
        let c: LlavaConfig =
            serde_json::from_str(r#"{"vision_feature_layer": -30, "text_config": {"vocab_size": 40000}}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("vision_feature_layer -30"));
    }
}
