//! Loading a video as RGB frames: a folder of image files, an animated GIF (composited as
//! Pillow shows it), or any other file through ffmpeg. Frames are picked with transformers
//! 5.24's `video_utils.default_sample_indices_fn` rule, and the kept frames' rate follows
//! `VideoMetadata.sampled_fps` (Qwen2.5-VL turns it into `second_per_grid_ts`).

use std::path::{Path, PathBuf};

use ::image::RgbImage;

use super::ffmpeg::{self, Tools};
use super::gif_frames::parse_gif;
use super::{load_image, ImageError, ImageLimits};

/// The rate assumed for a folder of frames: Qwen2-VL's usual sampling rate (qwen-vl-utils
/// samples 2 frames a second), since such folders are mostly frames already sampled for it.
pub const FOLDER_FPS: f64 = 2.0;

/// The rate assumed for a video file whose container states none (transformers'
/// `VideoMetadata.sampled_fps` falls back to 24 too).
const UNKNOWN_FPS: f64 = 24.0;

/// File extensions (lower case) that count as frames in a folder; other files are ignored.
const FRAME_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "webp", "bmp", "gif"];

/// Which frames of a video to keep. The default keeps every frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameSampling {
    /// Keep about this many frames per second of video, evenly spaced; never more than the
    /// source has.
    pub fps: Option<f64>,
    /// Keep at most this many frames, evenly spaced.
    pub max_frames: Option<usize>,
    /// The source's rate, replacing the one read from the file (GIF frame delays, the video
    /// container's rate) or assumed for a folder ([`FOLDER_FPS`]).
    pub source_fps: Option<f64>,
}

/// The kept frames of a video and their timing.
#[derive(Debug, Clone, PartialEq)]
pub struct Video {
    /// (name, pixels) in time order; the name is the frame's file, or "PATH frame N".
    pub frames: Vec<(String, RgbImage)>,
    /// The kept frames' indices among the source's frames.
    pub indices: Vec<usize>,
    /// Frames in the source.
    pub total_frames: usize,
    /// Frames per second of the source.
    pub source_fps: f64,
    /// Frames per second of the kept frames: `kept / total * source_fps`.
    pub fps: f64,
}

impl Video {
    /// The frames alone, for a processor (read `fps` first).
    pub fn into_images(self) -> Vec<RgbImage> {
        self.frames.into_iter().map(|(_, f)| f).collect()
    }
}

/// Loads the video at `path`: a folder of frames (files ending .png, .jpg, .jpeg, .webp, .bmp
/// or .gif, in file-name order, so number them with leading zeros), an animated GIF, or any
/// other video file through `ffmpeg` (which must be on PATH). Each frame is held to `limits`
/// (checked from the header before decoding), and all must be the same size.
pub fn load_video(path: &Path, limits: &ImageLimits, options: &FrameSampling) -> Result<Video, ImageError> {
    load_video_with(path, limits, options, ffmpeg::TOOLS)
}

fn load_video_with(
    path: &Path,
    limits: &ImageLimits,
    options: &FrameSampling,
    tools: Tools,
) -> Result<Video, ImageError> {
    check_options(options)?;
    let name = path.display().to_string();
    let read_error = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => ImageError::NotFound { path: name.clone() },
        _ => ImageError::Read { path: name.clone(), source },
    };
    if std::fs::metadata(path).map_err(read_error)?.is_dir() {
        return load_folder(path, &name, limits, options);
    }
    let mut head = [0u8; 6];
    let is_gif = {
        use std::io::Read;
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        file.read(&mut head).map_err(read_error)? == 6 && matches!(&head, b"GIF87a" | b"GIF89a")
    };
    if is_gif {
        let bytes = std::fs::read(path).map_err(read_error)?;
        return load_gif(&bytes, &name, limits, options);
    }
    let probe = ffmpeg::probe(tools, path, &name)?;
    check_size(&name, probe.width, probe.height, limits)?;
    let total = probe.frames.ok_or_else(|| ImageError::Ffmpeg {
        path: name.clone(),
        detail: "ffprobe could not count the frames".into(),
    })?;
    let source_fps = options.source_fps.or(probe.fps).unwrap_or(UNKNOWN_FPS);
    let indices = pick(&name, total, source_fps, options)?;
    let frames = ffmpeg::decode(tools, path, &name, &probe, &indices)?;
    let names = indices.iter().map(|i| format!("{name} frame {i}"));
    Ok(video(names.zip(frames).collect(), indices, total, source_fps))
}

/// The indices of the frames to keep out of `total` at `source_fps`: all of them, or with
/// `fps` `max(1, int(total / source_fps * fps))` of them (capped at `total`), at most
/// `max_frames`, spread as `i * total / n` (transformers' `default_sample_indices_fn`).
pub fn sample_indices(total: usize, source_fps: f64, options: &FrameSampling) -> Result<Vec<usize>, ImageError> {
    check_options(options)?;
    if !(source_fps.is_finite() && source_fps > 0.0) {
        return Err(sampling(format!("source fps must be positive, got {source_fps}")));
    }
    let mut n = total;
    if let Some(fps) = options.fps {
        n = ((total as f64 / source_fps * fps) as usize).clamp(1, total.max(1));
    }
    n = n.min(options.max_frames.unwrap_or(n)).min(total);
    Ok((0..n).map(|i| i * total / n).collect())
}

fn check_options(options: &FrameSampling) -> Result<(), ImageError> {
    for (what, v) in [("fps", options.fps), ("source fps", options.source_fps)] {
        if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(sampling(format!("{what} must be positive, got {v}")));
        }
    }
    if options.max_frames == Some(0) {
        return Err(sampling("max frames must be at least 1".into()));
    }
    Ok(())
}

fn sampling(message: String) -> ImageError {
    ImageError::Sampling { message }
}

/// `sample_indices`, refusing a source without frames.
fn pick(name: &str, total: usize, source_fps: f64, options: &FrameSampling) -> Result<Vec<usize>, ImageError> {
    if total == 0 {
        return Err(ImageError::InFile { name: name.into(), source: Box::new(ImageError::NoFrames) });
    }
    sample_indices(total, source_fps, options)
}

fn video(frames: Vec<(String, RgbImage)>, indices: Vec<usize>, total: usize, source_fps: f64) -> Video {
    Video { fps: indices.len() as f64 / total as f64 * source_fps, frames, indices, total_frames: total, source_fps }
}

fn load_folder(dir: &Path, name: &str, limits: &ImageLimits, options: &FrameSampling) -> Result<Video, ImageError> {
    let read_error = |source| ImageError::Read { path: name.into(), source };
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let is_frame = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| FRAME_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_frame && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.is_empty() {
        return Err(ImageError::EmptyFrameFolder { path: name.into() });
    }
    let source_fps = options.source_fps.unwrap_or(FOLDER_FPS);
    let indices = pick(name, files.len(), source_fps, options)?;
    let mut frames: Vec<(String, RgbImage)> = Vec::with_capacity(indices.len());
    for &i in &indices {
        let img = load_image(&files[i], limits)?;
        let frame_name = files[i].display().to_string();
        if let Some((_, first)) = frames.first() {
            if first.dimensions() != img.dimensions() {
                return Err(ImageError::InFile {
                    name: frame_name,
                    source: Box::new(ImageError::FrameSizeMismatch {
                        index: i,
                        width: img.width(),
                        height: img.height(),
                        first_index: indices[0],
                        first_width: first.width(),
                        first_height: first.height(),
                    }),
                });
            }
        }
        frames.push((frame_name, img));
    }
    Ok(video(frames, indices, files.len(), source_fps))
}

fn load_gif(bytes: &[u8], name: &str, limits: &ImageLimits, options: &FrameSampling) -> Result<Video, ImageError> {
    let gif = parse_gif(bytes, name)?;
    if gif.width == 0 || gif.height == 0 {
        return Err(ImageError::ZeroSize { name: name.into(), width: gif.width, height: gif.height });
    }
    check_size(name, gif.width, gif.height, limits)?;
    // Browsers show delays under 2/100 s as 1/10 s; GIFs rely on that, so count them so.
    let centiseconds: u64 = gif.delays().map(|d| d.filter(|&d| d >= 2).unwrap_or(10) as u64).sum();
    let gif_fps = gif.frame_count() as f64 * 100.0 / centiseconds.max(1) as f64;
    let source_fps = options.source_fps.unwrap_or(gif_fps);
    let indices = pick(name, gif.frame_count(), source_fps, options)?;
    let frames = gif.render(&indices, name, limits)?;
    let names = indices.iter().map(|i| format!("{name} frame {i}"));
    Ok(video(names.zip(frames).collect(), indices, gif.frame_count(), source_fps))
}

/// The pixel limit, checked before any frame is decoded.
fn check_size(name: &str, width: u32, height: u32, limits: &ImageLimits) -> Result<(), ImageError> {
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(ImageError::TooManyPixels { name: name.into(), width, height, pixels, limit: limits.max_pixels });
    }
    Ok(())
}

#[cfg(test)]
#[path = "video_tests.rs"]
mod tests;
