//! Qwen2-VL / Qwen2.5-VL preprocessing: `smart_resize`, then rescale + normalise, then the flat
//! patch layout the vision tower reads. Follows transformers 5.24
//! `models/qwen2_vl/image_processing_pil_qwen2_vl.py` (images, PIL back-end: Ocular's pixel
//! reference) and `video_processing_qwen2_vl.py` (videos; torchvision only, so frames that need
//! a resize are resized with the same Pillow-exact code as images).

use ::image::RgbImage;

use super::qwen2_vl_config::{Qwen2VlImageProcessorConfig, Qwen2VlVideoProcessorConfig};
use super::resize::resize;
use super::transform::{to_chw_with, to_normalized_chw};
use super::ImageError;

/// Images whose long side is more than this many times the short side are refused.
pub const MAX_ASPECT_RATIO: f64 = 200.0;

/// Pixel patches, one row per `patch_size` x `patch_size` patch of the (resized) picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Patches {
    /// `(rows, cols)`, row-major.
    pub data: Vec<f32>,
    /// Number of patches: `grid_t * grid_h * grid_w`. Rows come in merge order: for each
    /// temporal patch, each `merge_size` x `merge_size` block of patches in raster order, and
    /// the patches inside a block in raster order.
    pub rows: usize,
    /// `channels * temporal_patch_size * patch_size * patch_size`, in that order.
    pub cols: usize,
    /// `[grid_t, grid_h, grid_w]`: temporal patches, patch rows, patch columns.
    pub grid_thw: [usize; 3],
}

/// transformers' `smart_resize`: the (height, width) closest to the image's, with both sides
/// multiples of `factor` and `height * width` within `[min_pixels, max_pixels]` (the rounding
/// may land slightly outside). Python's `round` (half to even) picks the nearest multiples;
/// over `max_pixels` both sides shrink by `beta` and round down (never below `factor`), under
/// `min_pixels` they grow by `beta` and round up.
pub fn smart_resize(
    height: u32,
    width: u32,
    factor: u32,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u32, u32), ImageError> {
    if height == 0 || width == 0 {
        return Err(ImageError::ZeroSize { name: "image to resize".into(), width, height });
    }
    if factor == 0 {
        return Err(ImageError::Config {
            field: "patch_size",
            message: "patch_size * merge_size must be at least 1".into(),
        });
    }
    let ratio = height.max(width) as f64 / height.min(width) as f64;
    if ratio > MAX_ASPECT_RATIO {
        return Err(ImageError::AspectRatio { width, height, ratio });
    }
    // Python computes in exact integers and correctly rounded float divisions; the integers
    // here stay far below 2^53, so f64 gives the same values.
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((height as u64 * width as u64) as f64 / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (height as u64 * width as u64) as f64).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    let side = |v: f64| {
        u32::try_from(v as u64).map_err(|_| ImageError::Config {
            field: "min_pixels",
            message: format!("resizing a {width}x{height} image would need a side of {v} pixels"),
        })
    };
    Ok((side(h_bar)?, side(w_bar)?))
}

impl Qwen2VlImageProcessorConfig {
    /// (height, width) the image is resized to before patching.
    pub fn output_size(&self, width: u32, height: u32) -> Result<(u32, u32), ImageError> {
        self.frame_size(width, height, self.max_pixels)
    }

    /// Runs the processor on one image: `pixel_values` and `image_grid_thw` exactly as
    /// transformers' `Qwen2VLImageProcessorPil` returns them. The image is one temporal patch
    /// (`grid_t` = 1): each row holds it `temporal_patch_size` times.
    pub fn preprocess_image(&self, img: &RgbImage) -> Result<Patches, ImageError> {
        self.validate()?;
        let (h, w) = self.frame_size(img.width(), img.height(), self.max_pixels)?;
        let resized = (img.dimensions() != (w, h)).then(|| resize(img, w, h, self.resample));
        let chw = to_normalized_chw(
            resized.as_ref().unwrap_or(img),
            self.rescale_factor,
            self.do_rescale,
            self.do_normalize,
            self.image_mean.map(|m| m as f32),
            self.image_std.map(|s| s as f32),
        );
        Ok(self.patchify(&[chw], h as usize, w as usize))
    }

    /// The size frames take: smart_resize's when resizing, else the image's own, which must
    /// then already be a multiple of `factor` (transformers' reshape fails otherwise).
    fn frame_size(&self, width: u32, height: u32, max_pixels: u64) -> Result<(u32, u32), ImageError> {
        let factor = u32::try_from(self.factor()).unwrap_or(0);
        if self.do_resize {
            return smart_resize(height, width, factor, self.min_pixels, max_pixels);
        }
        if factor == 0 || !width.is_multiple_of(factor) || !height.is_multiple_of(factor) {
            return Err(ImageError::Config {
                field: "do_resize",
                message: format!(
                    "is false, so the {width}x{height} image must already be a multiple of \
                     patch_size * merge_size = {factor} on both sides"
                ),
            });
        }
        Ok((height, width))
    }

    /// transformers' `patchify` on `frames`, each `(3, height, width)`: the frame count is
    /// padded to a multiple of `temporal_patch_size` by repeating the last frame (so a single
    /// image is repeated `temporal_patch_size` times), then
    /// `(T, C, gh/m, m, p, gw/m, m, p)` is permuted to `(T/t, gh/m, gw/m, m, m, C, t, p, p)`
    /// and flattened to `(rows, cols)`.
    fn patchify(&self, frames: &[Vec<f32>], height: usize, width: usize) -> Patches {
        let (p, m, tp) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (gt, gh, gw) = (frames.len().div_ceil(tp), height / p, width / p);
        let (rows, cols) = (gt * gh * gw, 3 * tp * p * p);
        let plane = height * width;
        let mut data = Vec::with_capacity(rows * cols);
        for t in 0..gt {
            for bh in 0..gh / m {
                for bw in 0..gw / m {
                    for mh in 0..m {
                        for mw in 0..m {
                            let (y0, x0) = ((bh * m + mh) * p, (bw * m + mw) * p);
                            for c in 0..3 {
                                for tt in 0..tp {
                                    // Padding repeats the last frame.
                                    let frame = &frames[(t * tp + tt).min(frames.len() - 1)];
                                    for y in y0..y0 + p {
                                        let at = c * plane + y * width + x0;
                                        data.extend_from_slice(&frame[at..at + p]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Patches { data, rows, cols, grid_thw: [gt, gh, gw] }
    }
}

impl Qwen2VlVideoProcessorConfig {
    /// (height, width) every frame of a `frames`-frame video of `width` x `height` is resized to.
    pub fn output_size(&self, frames: usize, width: u32, height: u32) -> Result<(u32, u32), ImageError> {
        self.frame.frame_size(width, height, self.max_pixels_for(frames))
    }

    /// Runs the video processor on the frames of one video (already sampled, in order):
    /// `pixel_values_videos` and `video_grid_thw` as transformers' `Qwen2VLVideoProcessor`
    /// returns them. All frames are resized to the size smart_resize picks for the first;
    /// the frame count is padded to a multiple of `temporal_patch_size` by repeating the last
    /// frame, and `grid_t` is the padded count over `temporal_patch_size`.
    pub fn preprocess_video(&self, frames: &[RgbImage]) -> Result<Patches, ImageError> {
        let cfg = &self.frame;
        cfg.validate()?;
        let first = frames.first().ok_or(ImageError::NoFrames)?;
        let (w0, h0) = first.dimensions();
        if let Some((index, f)) = frames.iter().enumerate().find(|(_, f)| f.dimensions() != (w0, h0)) {
            return Err(ImageError::FrameSizeMismatch {
                index,
                width: f.width(),
                height: f.height(),
                first_index: 0,
                first_width: w0,
                first_height: h0,
            });
        }
        let (h, w) = self.output_size(frames.len(), w0, h0)?;
        let chw: Vec<Vec<f32>> = frames
            .iter()
            .map(|f| {
                let resized = (f.dimensions() != (w, h)).then(|| resize(f, w, h, cfg.resample));
                self.to_chw_like_torch(resized.as_ref().unwrap_or(f))
            })
            .collect();
        Ok(cfg.patchify(&chw, h as usize, w as usize))
    }

    /// The per-frame pixel cap: `max_pixels`, or with `cap_pixels_per_frame` an even share of
    /// 90% of `max_video_tokens` tokens' pixels, floored at 1.05 x `min_pixels` (transformers'
    /// `resize`, with its integer and float steps).
    fn max_pixels_for(&self, frames: usize) -> u64 {
        let cfg = &self.frame;
        if !self.cap_pixels_per_frame {
            return cfg.max_pixels;
        }
        let factor = cfg.factor() as u64;
        let total = (self.max_video_tokens * factor * factor) as f64 * 0.9;
        let share = total as u64 * cfg.temporal_patch_size as u64 / frames.max(1) as u64;
        let floor = (cfg.min_pixels as f64 * 1.05) as u64;
        cfg.max_pixels.min(share).max(floor)
    }

    /// The video processor's rescale + normalise, in torch's float32 arithmetic. Fused when
    /// both are on: `(x - mean * (1 / rescale_factor)) / (std * (1 / rescale_factor))`, which
    /// can differ from the image processor's `(x * rescale_factor - mean) / std` in the last bit.
    fn to_chw_like_torch(&self, img: &RgbImage) -> Vec<f32> {
        let cfg = &self.frame;
        let (mean, std) = (cfg.image_mean.map(|m| m as f32), cfg.image_std.map(|s| s as f32));
        let scale = cfg.rescale_factor as f32;
        match (cfg.do_rescale, cfg.do_normalize) {
            (true, true) => {
                let inv = (1.0 / cfg.rescale_factor) as f32;
                let (mean, std) = (mean.map(|m| m * inv), std.map(|s| s * inv));
                to_chw_with(img, |c, p| (p as f32 - mean[c]) / std[c])
            }
            (true, false) => to_chw_with(img, |_, p| p as f32 * scale),
            (false, true) => to_chw_with(img, |c, p| (p as f32 - mean[c]) / std[c]),
            (false, false) => to_chw_with(img, |_, p| p as f32),
        }
    }
}

/// Formats a ratio as Python's `repr(float)` does, so messages read like transformers'.
pub(super) fn python_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
#[path = "qwen2_vl_tests.rs"]
mod tests;
