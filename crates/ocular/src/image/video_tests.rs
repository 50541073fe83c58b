//! Tests of `video`: frame picking, frame folders, GIFs and ffmpeg (decoded when it is
//! installed, the missing-ffmpeg message otherwise and with a program that does not exist).

use std::path::PathBuf;

use ::image::{Rgb, RgbImage};
use serde_json::Value;

use super::super::test_fixtures as fx;
use super::*;

fn index() -> Value {
    serde_json::from_slice(&fx::read("qwen2_vl/index.json")).unwrap()
}

/// A fresh, empty folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ocular-video-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn solid(w: u32, h: u32, v: u8) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb([v, v / 2, 255 - v]))
}

fn sampling(fps: Option<f64>, max_frames: Option<usize>) -> FrameSampling {
    FrameSampling { fps, max_frames, source_fps: None }
}

#[test]
fn sample_indices_follow_transformers() {
    let all = FrameSampling::default();
    assert_eq!(sample_indices(5, 30.0, &all).unwrap(), [0, 1, 2, 3, 4]);
    // int(10 / 30 * 12) = 4 frames: i * 10 // 4.
    assert_eq!(sample_indices(10, 30.0, &sampling(Some(12.0), None)).unwrap(), [0, 2, 5, 7]);
    assert_eq!(sample_indices(10, 30.0, &sampling(None, Some(4))).unwrap(), [0, 2, 5, 7]);
    // At least one frame, at most all of them.
    assert_eq!(sample_indices(10, 30.0, &sampling(Some(0.01), None)).unwrap(), [0]);
    assert_eq!(sample_indices(3, 2.0, &sampling(Some(50.0), Some(9))).unwrap(), [0, 1, 2]);
    assert_eq!(sample_indices(9, 3.0, &sampling(Some(2.0), Some(4))).unwrap(), [0, 2, 4, 6]);
    let err = |o: FrameSampling| sample_indices(4, 2.0, &o).unwrap_err().to_string();
    assert_eq!(err(sampling(Some(0.0), None)), "frame sampling: fps must be positive, got 0");
    assert_eq!(err(sampling(None, Some(0))), "frame sampling: max frames must be at least 1");
    let bad_source = FrameSampling { source_fps: Some(-1.0), ..Default::default() };
    assert_eq!(err(bad_source), "frame sampling: source fps must be positive, got -1");
}

#[test]
fn folder_frames_in_name_order() {
    let dir = TempDir::new("folder");
    for (i, file) in ["b_002.png", "a_001.PNG", "c_010.bmp", "d_011.png"].iter().enumerate() {
        solid(6, 4, 40 * i as u8).save(dir.0.join(file)).unwrap();
    }
    std::fs::write(dir.0.join("notes.txt"), "not a frame").unwrap();
    std::fs::create_dir(dir.0.join("sub.png")).unwrap();
    let v = load_video(&dir.0, &ImageLimits::default(), &FrameSampling::default()).unwrap();
    let names: Vec<String> =
        v.frames.iter().map(|(n, _)| Path::new(n).file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(names, ["a_001.PNG", "b_002.png", "c_010.bmp", "d_011.png"]);
    assert_eq!(v.frames[0].1, solid(6, 4, 40));
    assert_eq!(v.frames[2].1, solid(6, 4, 80));
    assert_eq!((v.total_frames, v.source_fps, v.fps), (4, FOLDER_FPS, FOLDER_FPS));
    // Every other frame: 1 fps out of the assumed 2.
    let half = load_video(&dir.0, &ImageLimits::default(), &sampling(Some(1.0), None)).unwrap();
    assert_eq!((half.indices.clone(), half.fps), (vec![0, 2], 1.0));
    assert_eq!(half.into_images(), [solid(6, 4, 40), solid(6, 4, 80)]);
    // A stated source rate changes the kept rate.
    let stated = FrameSampling { max_frames: Some(2), source_fps: Some(8.0), ..Default::default() };
    let v = load_video(&dir.0, &ImageLimits::default(), &stated).unwrap();
    assert_eq!((v.indices, v.fps), (vec![0, 2], 4.0));
}

#[test]
fn folder_errors_name_the_file() {
    let dir = TempDir::new("errors");
    let name = dir.0.display().to_string();
    let load = |o: &FrameSampling| load_video(&dir.0, &ImageLimits::default(), o);
    std::fs::write(dir.0.join("readme.md"), "no frames here").unwrap();
    assert_eq!(
        load(&FrameSampling::default()).unwrap_err().to_string(),
        format!("{name}: folder has no video frames (files ending .png, .jpg, .jpeg, .webp, .bmp or .gif)")
    );
    for (i, (w, h)) in [(56, 84), (56, 84), (56, 84), (64, 48)].into_iter().enumerate() {
        solid(w, h, 9).save(dir.0.join(format!("f{i}.png"))).unwrap();
    }
    let err = load(&FrameSampling::default()).unwrap_err().to_string();
    let bad = dir.0.join("f3.png").display().to_string();
    assert_eq!(
        err,
        format!("{bad}: frame 3 is 64x48 but frame 0 is 56x84; all frames of a video must be the same size")
    );
    // Frames past the pixel limit are refused before decoding, naming the file.
    let tiny = ImageLimits { max_pixels: 100 };
    let err = load_video(&dir.0, &tiny, &FrameSampling::default()).unwrap_err().to_string();
    let first = dir.0.join("f0.png").display().to_string();
    assert!(err.starts_with(&format!("{first}: image is 56x84 = 4704 pixels, over the limit of 100")), "{err}");
    let missing = dir.0.join("nope");
    let err = load_video(&missing, &ImageLimits::default(), &FrameSampling::default()).unwrap_err();
    assert_eq!(err.to_string(), format!("{}: no such file", missing.display()));
}

#[test]
fn gif_frames_and_rate() {
    let index = index();
    let entry = index["gif"].as_array().unwrap().iter().find(|e| e["file"] == "pillow_optimized.gif").unwrap().clone();
    let path = fx::path("qwen2_vl/pillow_optimized.gif");
    let v = load_video(&path, &ImageLimits::default(), &FrameSampling::default()).unwrap();
    let blob = fx::read("qwen2_vl/frames.bin");
    let want = fx::range(&blob, &entry);
    let all: Vec<u8> = v.frames.iter().flat_map(|(_, f)| f.as_raw().clone()).collect();
    assert_eq!(all, want);
    assert_eq!(v.frames[1].0, format!("{} frame 1", path.display()));
    // Delays 10, 5, 20, 4 and 1 (shown as 10) hundredths: 5 frames in 0.49 s.
    assert_eq!(v.source_fps, 500.0 / 49.0);
    let two = load_video(&path, &ImageLimits::default(), &sampling(None, Some(2))).unwrap();
    assert_eq!(two.indices, [0, 2]);
    assert_eq!(two.frames[1].1, v.frames[2].1);
    assert_eq!(two.fps, 2.0 / 5.0 * v.source_fps);
    let tiny = ImageLimits { max_pixels: 10 };
    let err = load_video(&path, &tiny, &FrameSampling::default()).unwrap_err().to_string();
    assert!(err.contains("image is 12x9 = 108 pixels, over the limit of 10"), "{err}");
}

fn ffmpeg_installed() -> bool {
    std::process::Command::new("ffmpeg").arg("-version").output().is_ok_and(|o| o.status.success())
}

/// A program that does not exist gives the message that says what to do instead.
#[test]
fn missing_ffmpeg_is_explained() {
    let path = fx::path("qwen2_vl/video.mkv");
    let tools = Tools { ffmpeg: "ocular-no-such-ffmpeg", ffprobe: "ocular-no-such-ffprobe" };
    let err = load_video_with(&path, &ImageLimits::default(), &FrameSampling::default(), tools).unwrap_err();
    let want = format!(
        "{}: decoding video files needs ffmpeg on PATH (or give a folder of frames / an animated GIF)",
        path.display()
    );
    assert_eq!(err.to_string(), want);
    if !ffmpeg_installed() {
        let err = load_video(&path, &ImageLimits::default(), &FrameSampling::default()).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
}

/// Lossless (FFV1, RGB) frames at 5 fps decode to the source frames exactly.
#[test]
fn ffmpeg_video_when_installed() {
    if !ffmpeg_installed() {
        eprintln!("ffmpeg is not installed: skipping the decoding half");
        return;
    }
    let entry = index()["ffmpeg"].clone();
    let path = fx::path("qwen2_vl/video.mkv");
    let v = load_video(&path, &ImageLimits::default(), &FrameSampling::default()).unwrap();
    assert_eq!((v.total_frames, v.source_fps, v.fps), (4, 5.0, 5.0));
    let blob = fx::read("qwen2_vl/frames.bin");
    let all: Vec<u8> = v.frames.iter().flat_map(|(_, f)| f.as_raw().clone()).collect();
    assert_eq!(all, fx::range(&blob, &entry));
    assert_eq!(v.frames[0].1.dimensions(), (32, 24));
    // int(4 / 5 * 2.5) = 2 frames, 0 and 2, at 2.5 fps; ffmpeg stops after frame 2.
    let half = load_video(&path, &ImageLimits::default(), &sampling(Some(2.5), None)).unwrap();
    assert_eq!((half.indices.clone(), half.fps), (vec![0, 2], 2.5));
    assert_eq!(half.frames[1].1, v.frames[2].1);
    assert_eq!(half.frames[1].0, format!("{} frame 2", path.display()));
    let tiny = ImageLimits { max_pixels: 100 };
    let err = load_video(&path, &tiny, &FrameSampling::default()).unwrap_err().to_string();
    assert!(err.contains("image is 32x24 = 768 pixels, over the limit of 100"), "{err}");
    // Not a video at all.
    let text = TempDir::new("ffmpeg");
    let bogus = text.0.join("clip.mp4");
    std::fs::write(&bogus, "this is not a video").unwrap();
    let err = load_video(&bogus, &ImageLimits::default(), &FrameSampling::default()).unwrap_err();
    let err = err.to_string();
    assert!(err.starts_with(&format!("{}: ffmpeg could not decode the video: ", bogus.display())), "{err}");
}
