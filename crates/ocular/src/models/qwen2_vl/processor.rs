//! Qwen2-VL's processor: images and videos resized to multiples of 28 within pixel limits and
//! cut into patches (the image layer does that), placeholders expanded to one token per merged
//! 2x2 patch block (transformers' `Qwen2VLProcessor`).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::image::{Qwen2VlImageProcessorConfig, Qwen2VlVideoProcessorConfig};
use crate::load::ModelDir;

pub struct Qwen2VlProcessor {
    pub image: Qwen2VlImageProcessorConfig,
    pub video: Qwen2VlVideoProcessorConfig,
}

impl Qwen2VlProcessor {
    pub fn load(dir: &ModelDir) -> Result<Self> {
        let (path, value) = dir.image_processor_config()?;
        let bad = |path: &std::path::Path, what: &str, e: serde_json::Error| Error::Config {
            path: path.to_path_buf(),
            message: format!("{what}: {e}"),
        };
        let image: Qwen2VlImageProcessorConfig =
            serde_json::from_value(value.clone()).map_err(|e| bad(&path, "image processor", e))?;
        // The video processor's own settings where the folder has them; else, as transformers
        // does when it builds one from a 4.x folder, the image processor's pixel limits.
        let video_json: Option<(std::path::PathBuf, Value)> =
            match dir.json("processor_config.json")?.and_then(|v| v.get("video_processor").cloned()) {
                Some(v) => Some((dir.path("processor_config.json"), v)),
                None => {
                    dir.json("video_preprocessor_config.json")?.map(|v| (dir.path("video_preprocessor_config.json"), v))
                }
            };
        let video = match video_json {
            Some((path, v)) => serde_json::from_value(v).map_err(|e| bad(&path, "video processor", e))?,
            None if path.ends_with("preprocessor_config.json") => {
                serde_json::from_value(value).map_err(|e| bad(&path, "video processor", e))?
            }
            None => Qwen2VlVideoProcessorConfig::default(),
        };
        Ok(Self { image, video })
    }
}
