//! The CLIP-style image processor (CLIP, LLaVA and every model that reuses them): its config as
//! transformers writes it, and the preprocessing it implies. Follows transformers 5.24
//! `image_processing_backends.PilBackend`, `models/clip/image_processing_pil_clip.py`,
//! `models/llava/image_processing_pil_llava.py` and `image_transforms.py`.

use ::image::RgbImage;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::resize::{resize, Filter};
use super::size::{crop_size_de, size_de, SizeSpec};
use super::transform::{center_crop, expand_to_square, to_normalized_chw};
use super::ImageError;

/// OpenAI CLIP's normalisation constants, transformers' defaults for CLIP and LLaVA.
pub(super) const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub(super) const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The image-processor object of a checkpoint: the whole of a transformers 4.x
/// `preprocessor_config.json`, or the `"image_processor"` object of a transformers 5
/// `processor_config.json` (the caller picks which). Defaults are `CLIPImageProcessor`'s;
/// unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipImageProcessorConfig {
    /// e.g. "CLIPImageProcessor" or "LlavaImageProcessor"; decides what `do_pad` means.
    pub image_processor_type: Option<String>,
    pub do_resize: bool,
    #[serde(deserialize_with = "size_de")]
    pub size: SizeSpec,
    #[serde(deserialize_with = "resample_de")]
    pub resample: Filter,
    pub do_center_crop: bool,
    #[serde(deserialize_with = "crop_size_de")]
    pub crop_size: SizeSpec,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    /// Kept in double precision: the LLaVA padding colour is computed from it in Python floats.
    #[serde(deserialize_with = "triple_de")]
    pub image_mean: [f64; 3],
    #[serde(deserialize_with = "triple_de")]
    pub image_std: [f64; 3],
    /// Has no effect here: decoded images are already RGB (see `decode`).
    pub do_convert_rgb: bool,
    /// LLaVA: paste the image centred on a square canvas of the mean colour before resizing.
    pub do_pad: bool,
}

impl Default for ClipImageProcessorConfig {
    fn default() -> Self {
        ClipImageProcessorConfig {
            image_processor_type: None,
            do_resize: true,
            size: SizeSpec::ShortestEdge(224),
            resample: Filter::Bicubic,
            do_center_crop: true,
            crop_size: SizeSpec::HeightWidth { height: 224, width: 224 },
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
            do_convert_rgb: true,
            do_pad: false,
        }
    }
}

/// A preprocessed image: `data` is `(channels, height, width)`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    pub data: Vec<f32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ClipImageProcessorConfig {
    /// Whether `do_pad` means LLaVA's pad-to-square. In `CLIPImageProcessor` it means padding a
    /// batch to its largest image, which does nothing to a single image.
    pub fn pads_to_square(&self) -> bool {
        let clip = self.image_processor_type.as_deref().is_some_and(|t| t.starts_with("CLIP"));
        self.do_pad && !clip
    }

    /// LLaVA's padding colour: `tuple(int(x * 255) for x in image_mean)`, truncated.
    pub fn pad_color(&self) -> [u8; 3] {
        self.image_mean.map(|m| (m * 255.0).clamp(0.0, 255.0) as u8)
    }

    /// (height, width) of every tensor this config yields, when it does not depend on the
    /// input image (a centre crop, a fixed size, or a square pad then shortest-edge resize).
    pub fn output_size(&self) -> Option<(u32, u32)> {
        match (self.do_center_crop, self.crop_size) {
            (true, SizeSpec::HeightWidth { height, width }) => Some((height, width)),
            (true, _) => None,
            (false, _) if !self.do_resize => None,
            (false, _) => match self.size {
                SizeSpec::HeightWidth { height, width } => Some((height, width)),
                SizeSpec::ShortestEdge(n) if self.pads_to_square() => Some((n, n)),
                _ => None,
            },
        }
    }

    /// (height, width) of the tensor for an input image of `width` x `height`.
    pub fn output_size_for(&self, width: u32, height: u32) -> Result<(u32, u32), ImageError> {
        let (mut h, mut w) = (height, width);
        if self.pads_to_square() {
            let side = w.max(h);
            (h, w) = (side, side);
        }
        if self.do_resize {
            (h, w) = self.resize_target(h, w)?;
        }
        if self.do_center_crop {
            (h, w) = self.crop_target()?;
        }
        Ok((h, w))
    }

    /// Runs the processor on one image: exactly the `pixel_values` transformers'
    /// `CLIPImageProcessor` / `LlavaImageProcessor` (PIL back-end) return for it.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Preprocessed, ImageError> {
        if img.width() == 0 || img.height() == 0 {
            // The size rules divide by the short side.
            return Err(ImageError::ZeroSize {
                name: "image to preprocess".into(),
                width: img.width(),
                height: img.height(),
            });
        }
        let padded;
        let mut img = img;
        if self.pads_to_square() {
            padded = expand_to_square(img, self.pad_color());
            img = &padded;
        }
        let resized;
        if self.do_resize {
            let (h, w) = self.resize_target(img.height(), img.width())?;
            resized = resize(img, w, h, self.resample);
            img = &resized;
        }
        let cropped;
        if self.do_center_crop {
            let (h, w) = self.crop_target()?;
            cropped = center_crop(img, w, h);
            img = &cropped;
        }
        let data = to_normalized_chw(
            img,
            self.rescale_factor,
            self.do_rescale,
            self.do_normalize,
            self.image_mean.map(|m| m as f32),
            self.image_std.map(|s| s as f32),
        );
        Ok(Preprocessed { data, channels: 3, height: img.height() as usize, width: img.width() as usize })
    }

    fn crop_target(&self) -> Result<(u32, u32), ImageError> {
        match self.crop_size {
            SizeSpec::HeightWidth { height, width } if height > 0 && width > 0 => Ok((height, width)),
            other => Err(ImageError::Config {
                field: "crop_size",
                message: format!("centre crop needs a positive height and width, got {other:?}"),
            }),
        }
    }

    /// The resize target for an image of `height` x `width`, refusing empty results (Pillow
    /// would raise).
    fn resize_target(&self, height: u32, width: u32) -> Result<(u32, u32), ImageError> {
        let (h, w) = self.size.resize_target(height, width);
        if h == 0 || w == 0 {
            return Err(ImageError::Config {
                field: "size",
                message: format!("{:?} turns a {width}x{height} image into {w}x{h}, which is empty", self.size),
            });
        }
        Ok((h, w))
    }
}

/// A PIL filter code; `null` means the PIL back-end's fallback, BILINEAR.
fn resample_de<'de, D: Deserializer<'de>>(d: D) -> Result<Filter, D::Error> {
    match Option::<u64>::deserialize(d)? {
        None => Ok(Filter::Bilinear),
        Some(code) => u32::try_from(code)
            .map_err(|_| ImageError::UnknownFilter { code })
            .and_then(Filter::from_pil_code)
            .map_err(|e| serde::de::Error::custom(format!("`resample`: {e}"))),
    }
}

/// Per-channel constants: three numbers, or one number for all channels.
pub(super) fn triple_de<'de, D: Deserializer<'de>>(d: D) -> Result<[f64; 3], D::Error> {
    let v = Value::deserialize(d)?;
    let nums: Option<Vec<f64>> = match &v {
        Value::Number(n) => n.as_f64().map(|x| vec![x; 3]),
        Value::Array(a) => a.iter().map(Value::as_f64).collect(),
        _ => None,
    };
    match nums.as_deref() {
        Some(&[a, b, c]) => Ok([a, b, c]),
        Some(&[a]) => Ok([a; 3]),
        _ => Err(serde::de::Error::custom(format!("`image_mean`/`image_std`: expected 3 numbers, got {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_4x_llava_config_with_int_crop_size() {
        let json = r#"{
            "crop_size": 336, "do_center_crop": true, "do_normalize": true, "do_resize": true,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_processor_type": "CLIPImageProcessor",
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3, "size": 336
        }"#;
        let cfg: ClipImageProcessorConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.size, SizeSpec::ShortestEdge(336));
        assert_eq!(cfg.crop_size, SizeSpec::HeightWidth { height: 336, width: 336 });
        assert_eq!(cfg.resample, Filter::Bicubic);
        assert_eq!(cfg.rescale_factor, 1.0 / 255.0);
        assert_eq!(cfg.output_size(), Some((336, 336)));
        assert!(!cfg.pads_to_square());
    }

    #[test]
    fn defaults_and_llava_padding_colour() {
        let cfg: ClipImageProcessorConfig =
            serde_json::from_str(r#"{"image_processor_type": "LlavaImageProcessor", "do_pad": true}"#).unwrap();
        assert_eq!(cfg.size, SizeSpec::ShortestEdge(224));
        assert!(cfg.pads_to_square());
        // int(0.48145466 * 255) = 122, int(0.4578275 * 255) = 116, int(0.40821073 * 255) = 104.
        assert_eq!(cfg.pad_color(), [122, 116, 104]);
        let clip: ClipImageProcessorConfig =
            serde_json::from_str(r#"{"image_processor_type": "CLIPImageProcessor", "do_pad": true}"#).unwrap();
        assert!(!clip.pads_to_square());
    }

    #[test]
    fn output_size_depends_on_image_only_without_crop() {
        let cfg: ClipImageProcessorConfig =
            serde_json::from_str(r#"{"do_center_crop": false, "size": {"shortest_edge": 40}}"#).unwrap();
        assert_eq!(cfg.output_size(), None);
        assert_eq!(cfg.output_size_for(300, 199).unwrap(), (40, 60));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |json: &str| serde_json::from_str::<ClipImageProcessorConfig>(json).unwrap_err().to_string();
        let e = err(r#"{"resample": 9}"#);
        assert!(e.contains("`resample`: unknown PIL resampling filter code 9"), "{e}");
        let e = err(r#"{"size": {"longest_edge": 5}}"#);
        assert!(e.contains("`size`: unsupported keys [\"longest_edge\"]"), "{e}");
        let e = err(r#"{"crop_size": "big"}"#);
        assert!(e.contains("`crop_size`: expected an integer"), "{e}");
        let e = err(r#"{"image_mean": [0.5, 0.5]}"#);
        assert!(e.contains("expected 3 numbers"), "{e}");
        let cfg = ClipImageProcessorConfig { crop_size: SizeSpec::ShortestEdge(5), ..Default::default() };
        let e = cfg.preprocess(&RgbImage::new(8, 8)).unwrap_err().to_string();
        assert!(e.starts_with("image processor config: `crop_size`: centre crop needs"), "{e}");
        let e = ClipImageProcessorConfig::default().preprocess(&RgbImage::new(0, 3));
        assert!(e.unwrap_err().to_string().contains("zero size (0x3)"));
    }

    /// transformers' own configs (as `to_dict` writes them) run on the noisy inputs must give
    /// transformers' pixel values.
    #[test]
    fn matches_transformers_pil_backend() {
        use super::super::test_fixtures as fx;
        let index = fx::index();
        let blob = fx::read("processor.bin");
        let mut worst = 0f32;
        for entry in index["processor"].as_array().unwrap() {
            let what = format!("{} on {}", entry["case"], entry["image"]);
            let cfg: ClipImageProcessorConfig = serde_json::from_value(entry["config"].clone()).unwrap();
            let img = fx::input_image(entry["image"].as_str().unwrap());
            let out = cfg.preprocess(&img).unwrap();
            let shape: Vec<usize> =
                entry["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            assert_eq!(vec![out.channels, out.height, out.width], shape, "{what}");
            assert_eq!(
                cfg.output_size_for(img.width(), img.height()).unwrap(),
                (out.height as u32, out.width as u32),
                "{what}"
            );
            if let Some(size) = cfg.output_size() {
                assert_eq!(size, (out.height as u32, out.width as u32), "{what}");
            }
            let want: Vec<f32> =
                fx::range(&blob, entry).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            assert_eq!(out.data.len(), want.len(), "{what}");
            let diff = out.data.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(diff <= 1e-5, "{what}: max difference {diff}");
            worst = worst.max(diff);
        }
        // The arithmetic follows numpy's exactly, so in practice the outputs are identical.
        assert_eq!(worst, 0.0);
    }
}
