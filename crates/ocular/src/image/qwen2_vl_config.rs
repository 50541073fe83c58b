//! The Qwen2-VL / Qwen2.5-VL image- and video-processor configs as checkpoints write them. Follows
//! transformers 5.24 `models/qwen2_vl/image_processing_pil_qwen2_vl.py` (`__init__`: top-level
//! `min_pixels` / `max_pixels` override `size`) and `video_processing_qwen2_vl.py` (its defaults).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::clip_processor::{triple_de, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
use super::resize::Filter;
use super::ImageError;

/// `Qwen2VLImageProcessor`'s pixel limits: 56x56 up to 1280 patches of 28x28.
pub const QWEN2_VL_IMAGE_MIN_PIXELS: u64 = 56 * 56;
pub const QWEN2_VL_IMAGE_MAX_PIXELS: u64 = 28 * 28 * 1280;
/// `Qwen2VLVideoProcessor`'s own pixel limits, which apply when the checkpoint's video config
/// (or, lacking one, its image config) names none.
pub const QWEN2_VL_VIDEO_MIN_PIXELS: u64 = 128 * 28 * 28;
pub const QWEN2_VL_VIDEO_MAX_PIXELS: u64 = 768 * 28 * 28;

/// The image-processor object of a Qwen2-VL / Qwen2.5-VL checkpoint: a 4.x
/// `preprocessor_config.json`, or `processor_config.json["image_processor"]` (5.x); the caller
/// picks which. Both layouts of the pixel limits are read: `size: {"shortest_edge": min,
/// "longest_edge": max}` (5.x) and top-level `min_pixels` / `max_pixels` (4.x), the latter
/// winning as in transformers. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlImageProcessorConfig {
    /// smart_resize's lower bound on height x width (`size["shortest_edge"]`).
    pub min_pixels: u64,
    /// smart_resize's upper bound on height x width (`size["longest_edge"]`).
    pub max_pixels: u64,
    pub patch_size: usize,
    /// Frames per temporal patch; a still image is repeated this many times.
    pub temporal_patch_size: usize,
    /// Patches merged per side by the vision tower's merger; sizes are multiples of
    /// `patch_size * merge_size`.
    pub merge_size: usize,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    pub rescale_factor: f64,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub do_normalize: bool,
    pub resample: Filter,
    /// Has no effect here: decoded images are already RGB (see `decode`).
    pub do_convert_rgb: bool,
}

impl Default for Qwen2VlImageProcessorConfig {
    fn default() -> Self {
        Self::with_defaults(QWEN2_VL_IMAGE_MIN_PIXELS, QWEN2_VL_IMAGE_MAX_PIXELS)
    }
}

impl Qwen2VlImageProcessorConfig {
    fn with_defaults(min_pixels: u64, max_pixels: u64) -> Self {
        Qwen2VlImageProcessorConfig {
            min_pixels,
            max_pixels,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
            rescale_factor: 1.0 / 255.0,
            do_resize: true,
            do_rescale: true,
            do_normalize: true,
            resample: Filter::Bicubic,
            do_convert_rgb: true,
        }
    }

    /// The same config with the per-call pixel limits a user asked for (e.g. `--min-pixels`);
    /// `None` keeps the config's value.
    pub fn with_pixel_limits(mut self, min_pixels: Option<u64>, max_pixels: Option<u64>) -> Self {
        self.min_pixels = min_pixels.unwrap_or(self.min_pixels);
        self.max_pixels = max_pixels.unwrap_or(self.max_pixels);
        self
    }

    /// Image sides are multiples of this: `patch_size * merge_size` (28 for the released models).
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Rejects what transformers cannot run: zero pixel limits when resizing (its `resize`
    /// raises) and zero patch sizes.
    pub(super) fn validate(&self) -> Result<(), ImageError> {
        // A limit of 1 stands in for an unused one.
        let used = |v: u64| if self.do_resize { v } else { 1 };
        let checks = [
            ("min_pixels", used(self.min_pixels)),
            ("max_pixels", used(self.max_pixels)),
            ("patch_size", self.patch_size as u64),
            ("temporal_patch_size", self.temporal_patch_size as u64),
            ("merge_size", self.merge_size as u64),
        ];
        match checks.iter().find(|(_, v)| *v == 0) {
            Some(&(field, _)) => Err(ImageError::Config { field, message: "must be at least 1".into() }),
            None => Ok(()),
        }
    }
}

impl<'de> Deserialize<'de> for Qwen2VlImageProcessorConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawConfig::deserialize(d)?
            .resolve(QWEN2_VL_IMAGE_MIN_PIXELS, QWEN2_VL_IMAGE_MAX_PIXELS)
            .map_err(D::Error::custom)
    }
}

/// The video-processor object of a Qwen2-VL / Qwen2.5-VL checkpoint. transformers looks for it
/// in `processor_config.json["video_processor"]`, then `video_preprocessor_config.json`, then
/// falls back to `preprocessor_config.json` (whose `min_pixels` / `max_pixels` then apply to
/// videos too); the caller picks. Pixel limits missing from the object take the video
/// processor's defaults (128x28x28 to 768x28x28), not the image processor's.
///
/// Frame sampling fields (`do_sample_frames`, `fps`, `num_frames`) are not read: frames are
/// picked when the video is loaded (see `video::FrameSampling`).
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlVideoProcessorConfig {
    /// How each frame is resized, normalised and cut into patches.
    pub frame: Qwen2VlImageProcessorConfig,
    /// qwen-vl-utils' total budget: each frame gets at most an even share of
    /// `max_video_tokens` tokens' worth of pixels. transformers 5.24 defaults to off (`None`).
    pub cap_pixels_per_frame: bool,
    pub max_video_tokens: u64,
}

impl Default for Qwen2VlVideoProcessorConfig {
    fn default() -> Self {
        Qwen2VlVideoProcessorConfig {
            frame: Qwen2VlImageProcessorConfig::with_defaults(QWEN2_VL_VIDEO_MIN_PIXELS, QWEN2_VL_VIDEO_MAX_PIXELS),
            cap_pixels_per_frame: false,
            max_video_tokens: 128_000,
        }
    }
}

impl Qwen2VlVideoProcessorConfig {
    /// As [`Qwen2VlImageProcessorConfig::with_pixel_limits`], for each frame.
    pub fn with_pixel_limits(mut self, min_pixels: Option<u64>, max_pixels: Option<u64>) -> Self {
        self.frame = self.frame.with_pixel_limits(min_pixels, max_pixels);
        self
    }

    /// Qwen2.5-VL's `second_per_grid_ts` for frames kept at `fps`: seconds of video per
    /// temporal patch (`temporal_patch_size / fps`).
    pub fn seconds_per_grid_t(&self, fps: f64) -> f64 {
        self.frame.temporal_patch_size as f64 / fps
    }
}

impl<'de> Deserialize<'de> for Qwen2VlVideoProcessorConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawVideoConfig::deserialize(d)?;
        let frame =
            raw.frame.resolve(QWEN2_VL_VIDEO_MIN_PIXELS, QWEN2_VL_VIDEO_MAX_PIXELS).map_err(D::Error::custom)?;
        Ok(Qwen2VlVideoProcessorConfig {
            frame,
            cap_pixels_per_frame: raw.cap_pixels_per_frame.unwrap_or(false),
            max_video_tokens: raw.max_video_tokens,
        })
    }
}

/// The JSON fields before the pixel limits are resolved (their defaults differ between the
/// image and the video processor).
#[derive(Deserialize)]
#[serde(default)]
struct RawConfig {
    size: Option<Value>,
    min_pixels: Option<u64>,
    max_pixels: Option<u64>,
    patch_size: usize,
    temporal_patch_size: usize,
    merge_size: usize,
    #[serde(deserialize_with = "triple_de")]
    image_mean: [f64; 3],
    #[serde(deserialize_with = "triple_de")]
    image_std: [f64; 3],
    rescale_factor: f64,
    do_resize: bool,
    do_rescale: bool,
    do_normalize: bool,
    #[serde(deserialize_with = "resample_de")]
    resample: Filter,
    do_convert_rgb: bool,
}

impl Default for RawConfig {
    fn default() -> Self {
        let d = Qwen2VlImageProcessorConfig::default();
        RawConfig {
            size: None,
            min_pixels: None,
            max_pixels: None,
            patch_size: d.patch_size,
            temporal_patch_size: d.temporal_patch_size,
            merge_size: d.merge_size,
            image_mean: d.image_mean,
            image_std: d.image_std,
            rescale_factor: d.rescale_factor,
            do_resize: d.do_resize,
            do_rescale: d.do_rescale,
            do_normalize: d.do_normalize,
            resample: d.resample,
            do_convert_rgb: d.do_convert_rgb,
        }
    }
}

#[derive(Deserialize)]
struct RawVideoConfig {
    #[serde(flatten)]
    frame: RawConfig,
    #[serde(default)]
    cap_pixels_per_frame: Option<bool>,
    #[serde(default = "default_max_video_tokens")]
    max_video_tokens: u64,
}

fn default_max_video_tokens() -> u64 {
    Qwen2VlVideoProcessorConfig::default().max_video_tokens
}

impl RawConfig {
    /// transformers' `__init__`: start from `size` (or the class default when absent), then let
    /// top-level `min_pixels` / `max_pixels` replace its two entries.
    fn resolve(self, min_default: u64, max_default: u64) -> Result<Qwen2VlImageProcessorConfig, String> {
        let (mut min_pixels, mut max_pixels) = match &self.size {
            None => (Some(min_default), Some(max_default)),
            Some(size) => parse_size(size)?,
        };
        min_pixels = self.min_pixels.or(min_pixels);
        max_pixels = self.max_pixels.or(max_pixels);
        let (Some(min_pixels), Some(max_pixels)) = (min_pixels, max_pixels) else {
            return Err(format!(
                "`size`: needs both `shortest_edge` (min pixels) and `longest_edge` (max pixels) \
                 unless top-level `min_pixels` / `max_pixels` give them, got {}",
                self.size.unwrap_or(Value::Null)
            ));
        };
        Ok(Qwen2VlImageProcessorConfig {
            min_pixels,
            max_pixels,
            patch_size: self.patch_size,
            temporal_patch_size: self.temporal_patch_size,
            merge_size: self.merge_size,
            image_mean: self.image_mean,
            image_std: self.image_std,
            rescale_factor: self.rescale_factor,
            do_resize: self.do_resize,
            do_rescale: self.do_rescale,
            do_normalize: self.do_normalize,
            resample: self.resample,
            do_convert_rgb: self.do_convert_rgb,
        })
    }
}

/// `size` as (min pixels, max pixels). transformers 4.45 wrote `{"min_pixels", "max_pixels"}`
/// here (always next to the same top-level keys); 5.24 would reject that shape on its own, but
/// its meaning is plain, so it is read as the same two limits.
fn parse_size(size: &Value) -> Result<(Option<u64>, Option<u64>), String> {
    let map = size.as_object().ok_or_else(|| format!("`size`: expected an object, got {size}"))?;
    let (mut min, mut max) = (None, None);
    for (key, v) in map {
        let n = v.as_u64().ok_or_else(|| format!("`size`: `{key}` must be a non-negative integer, got {v}"))?;
        match key.as_str() {
            "shortest_edge" | "min_pixels" => min = Some(n),
            "longest_edge" | "max_pixels" => max = Some(n),
            _ => {
                return Err(format!(
                    "`size`: unsupported key `{key}` (Qwen2-VL takes `shortest_edge` = min \
                     pixels and `longest_edge` = max pixels)"
                ))
            }
        }
    }
    Ok((min, max))
}

/// A PIL filter code. transformers refuses `null` when resizing, so it is refused here too.
fn resample_de<'de, D: Deserializer<'de>>(d: D) -> Result<Filter, D::Error> {
    let code =
        u64::deserialize(d).map_err(|e| D::Error::custom(format!("`resample`: expected a PIL filter code: {e}")))?;
    u32::try_from(code)
        .map_err(|_| ImageError::UnknownFilter { code })
        .and_then(Filter::from_pil_code)
        .map_err(|e| D::Error::custom(format!("`resample`: {e}")))
}
