//! LLaVA's processor: images through CLIP's preprocessing, each `<image>` expanded to the
//! number of feature vectors its image yields (transformers' `LlavaProcessor`).

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::image::ClipImageProcessorConfig;
use crate::load::ModelDir;

pub struct LlavaProcessor {
    pub image: ClipImageProcessorConfig,
}

impl LlavaProcessor {
    pub fn load(dir: &ModelDir) -> Result<Self> {
        let (path, value) = dir.image_processor_config()?;
        let image = serde_json::from_value(value)
            .map_err(|e| Error::Config { path, message: format!("image processor: {e}") })?;
        Ok(Self { image })
    }

    /// (channels, height, width) normalised pixel values of one image.
    pub fn pixel_values(&self, img: &::image::RgbImage, device: &Device) -> Result<Tensor> {
        let p = self.image.preprocess(img)?;
        Ok(Tensor::from_vec(p.data, (3, p.height as usize, p.width as usize), device)?)
    }
}
