//! The image layer: decode files into RGB pixels, resize them exactly as Pillow does, and turn
//! them into the normalised channels-first tensors that transformers' image processors produce
//! on their PIL back-end (transformers 5.24, `image_processing_backends.PilBackend`).
//!
//! This is the lowest layer of Ocular: it knows nothing of models. A family's code picks the
//! processor config out of its checkpoint and calls [`ClipImageProcessorConfig::preprocess`].
//!
//! Flow: [`load_image`] / [`decode_image`] (limits checked before decoding) → optional
//! [`expand_to_square`] → [`resize`] (bit-exact with Pillow) → [`center_crop`] →
//! [`to_normalized_chw`].
//!
//! Qwen2-VL / Qwen2.5-VL: [`Qwen2VlImageProcessorConfig::preprocess_image`] ([`smart_resize`],
//! then flat [`Patches`]); videos come from [`load_video`] (a folder of frames, an animated
//! GIF, or ffmpeg) and go through [`Qwen2VlVideoProcessorConfig::preprocess_video`].

mod clip_processor;
mod decode;
mod ffmpeg;
mod gif_canvas;
mod gif_frames;
mod gif_lzw;
mod qwen2_vl_config;
mod qwen2_vl_processor;
mod resize;
mod size;
#[cfg(test)]
mod test_fixtures;
mod transform;
mod video;

pub use self::clip_processor::{ClipImageProcessorConfig, Preprocessed};
pub use self::decode::{decode_image, load_image, probe_image, ImageLimits};
pub use self::qwen2_vl_config::{
    Qwen2VlImageProcessorConfig, Qwen2VlVideoProcessorConfig, QWEN2_VL_IMAGE_MAX_PIXELS, QWEN2_VL_IMAGE_MIN_PIXELS,
    QWEN2_VL_VIDEO_MAX_PIXELS, QWEN2_VL_VIDEO_MIN_PIXELS,
};
pub use self::qwen2_vl_processor::{smart_resize, Patches, MAX_ASPECT_RATIO};
pub use self::resize::{resize, Filter};
pub use self::size::SizeSpec;
pub use self::transform::{center_crop, expand_to_square, to_normalized_chw};
pub use self::video::{load_video, sample_indices, FrameSampling, Video, FOLDER_FPS};
/// The decoded pixel type used throughout: 8-bit RGB, row-major, interleaved.
pub use ::image::RgbImage;

/// Everything that can go wrong in the image layer. Each message is one line that names the
/// file (or the config field) and says what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: no such file")]
    NotFound { path: String },

    #[error("{path}: cannot read file: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{name}: file is empty (0 bytes)")]
    Empty { name: String },

    #[error("{name}: not a recognised image format (supported: PNG, JPEG, WebP, GIF, BMP)")]
    UnknownFormat { name: String },

    #[error("{name}: {format} images are not supported (supported: PNG, JPEG, WebP, GIF, BMP)")]
    UnsupportedFormat { name: String, format: String },

    #[error("{name}: uses an image feature that is not supported ({detail})")]
    UnsupportedFeature { name: String, detail: String },

    #[error("{name}: corrupt or truncated image data ({detail})")]
    Corrupt { name: String, detail: String },

    #[error("{name}: image has zero size ({width}x{height})")]
    ZeroSize { name: String, width: u32, height: u32 },

    #[error(
        "{name}: image is {width}x{height} = {pixels} pixels, over the limit of {limit} \
         (raise it with --max-image-pixels, or max_image_pixels in a training config's \
         [conversations])"
    )]
    TooManyPixels { name: String, width: u32, height: u32, pixels: u64, limit: u64 },

    #[error(
        "unknown PIL resampling filter code {code} (expected 0 NEAREST, 1 LANCZOS, 2 BILINEAR, \
         3 BICUBIC, 4 BOX or 5 HAMMING)"
    )]
    UnknownFilter { code: u64 },

    #[error("image processor config: `{field}`: {message}")]
    Config { field: &'static str, message: String },

    #[error(
        "image {width}x{height} has aspect ratio {}, over the limit of 200",
        qwen2_vl_processor::python_float(*.ratio)
    )]
    AspectRatio { width: u32, height: u32, ratio: f64 },

    #[error("video has no frames")]
    NoFrames,

    #[error(
        "frame {index} is {width}x{height} but frame {first_index} is \
         {first_width}x{first_height}; all frames of a video must be the same size"
    )]
    FrameSizeMismatch { index: usize, width: u32, height: u32, first_index: usize, first_width: u32, first_height: u32 },

    #[error(
        "{path}: folder has no video frames (files ending .png, .jpg, .jpeg, .webp, .bmp or \
         .gif)"
    )]
    EmptyFrameFolder { path: String },

    #[error(
        "{path}: decoding video files needs ffmpeg on PATH (or give a folder of frames / an \
         animated GIF)"
    )]
    FfmpegMissing { path: String },

    #[error("{path}: ffmpeg could not decode the video: {detail}")]
    Ffmpeg { path: String, detail: String },

    #[error("frame sampling: {message}")]
    Sampling { message: String },

    /// Another error, prefixed with the file (or frame) it is about.
    #[error("{name}: {source}")]
    InFile {
        name: String,
        #[source]
        source: Box<ImageError>,
    },
}
