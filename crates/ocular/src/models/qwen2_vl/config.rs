//! `Qwen2VLConfig` / `Qwen2_5_VLConfig`: a vision config, a Qwen2 text config (nested under
//! `text_config` in transformers 5, flat at the top level in Hub 4.x checkpoints), and the ids
//! of the media placeholder tokens.

use serde::Deserialize;
use serde_json::Value;

use crate::text::Qwen2Config;
use crate::vision::{Qwen25VisionConfig, Qwen2VisionConfig, VitSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Qwen2Vl,
    Qwen25Vl,
}

#[derive(Deserialize)]
struct Ids {
    #[serde(default = "d_image")]
    image_token_id: u32,
    #[serde(default = "d_video")]
    video_token_id: u32,
    tie_word_embeddings: Option<bool>,
}
fn d_image() -> u32 {
    151655
}
fn d_video() -> u32 {
    151656
}

#[derive(Debug, Clone)]
pub struct Qwen2VlConfig {
    pub variant: Variant,
    pub text: Qwen2Config,
    pub vision: VitSpec,
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub tie_word_embeddings: bool,
    /// Qwen2.5-VL: temporal positions per second of video.
    pub tokens_per_second: Option<usize>,
}

impl Qwen2VlConfig {
    pub fn from_json(config: &Value) -> Result<Self, String> {
        let variant = match config.get("model_type").and_then(Value::as_str) {
            Some("qwen2_5_vl") => Variant::Qwen25Vl,
            _ => Variant::Qwen2Vl,
        };
        let err = |what: &str, e: serde_json::Error| format!("{what}: {e}");
        // 4.x keeps the text fields at the top level.
        let text_json = config.get("text_config").filter(|v| v.is_object()).unwrap_or(config);
        let text: Qwen2Config = serde_json::from_value(text_json.clone()).map_err(|e| err("text config", e))?;
        let vision_json = config.get("vision_config").cloned().ok_or("no `vision_config`")?;
        let (vision, tokens_per_second) = match variant {
            Variant::Qwen2Vl => {
                let v: Qwen2VisionConfig = serde_json::from_value(vision_json).map_err(|e| err("vision_config", e))?;
                (VitSpec::from(&v), None)
            }
            Variant::Qwen25Vl => {
                let v: Qwen25VisionConfig = serde_json::from_value(vision_json).map_err(|e| err("vision_config", e))?;
                (VitSpec::from(&v), Some(v.tokens_per_second))
            }
        };
        let ids: Ids = serde_json::from_value(config.clone()).map_err(|e| err("config", e))?;
        let tie_word_embeddings = ids.tie_word_embeddings.or(text.tie_word_embeddings).unwrap_or(false);
        let c = Self {
            variant,
            text,
            vision,
            image_token_id: ids.image_token_id,
            video_token_id: ids.video_token_id,
            tie_word_embeddings,
            tokens_per_second,
        };
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        self.text.validate()?;
        self.vision.validate()?;
        if self.vision.out_dim != self.text.hidden_size {
            return Err(format!(
                "the vision merger yields {} features but the language model's hidden_size is {}",
                self.vision.out_dim, self.text.hidden_size
            ));
        }
        for (name, id) in [("image_token_id", self.image_token_id), ("video_token_id", self.video_token_id)] {
            if id as usize >= self.text.vocab_size {
                return Err(format!("{name} {id} is outside the vocabulary of {}", self.text.vocab_size));
            }
        }
        Ok(())
    }
}
