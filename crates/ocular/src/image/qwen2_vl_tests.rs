//! Tests of `qwen2_vl_config` and `qwen2_vl_processor`: both config layouts, smart_resize
//! against transformers' values, patch order on a tiny config, and parity with transformers'
//! processors on the fixtures of `scripts/fixtures/image_qwen2_vl.py`
//! (`tests/fixtures/image/qwen2_vl/`).

use ::image::{Rgb, RgbImage};
use serde_json::Value;

use super::super::clip_processor::OPENAI_CLIP_MEAN;
use super::super::resize::Filter;
use super::super::test_fixtures as fx;
use super::*;

fn index() -> Value {
    serde_json::from_slice(&fx::read("qwen2_vl/index.json")).expect("qwen2_vl/index.json")
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|n| n.as_u64().unwrap() as usize).collect()
}

/// Largest absolute difference; panics on a length mismatch.
fn max_diff(got: &[f32], want: &[f32], what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

#[test]
fn smart_resize_matches_transformers_table() {
    for case in index()["smart_resize"].as_array().unwrap() {
        let n = |k: &str| case[k].as_u64().unwrap();
        let (h, w) = (n("height") as u32, n("width") as u32);
        let got = smart_resize(h, w, n("factor") as u32, n("min_pixels"), n("max_pixels"));
        match &case["out"] {
            Value::String(python) => {
                // "absolute aspect ratio must be smaller than 200, got 250.0"
                let ratio = python.rsplit("got ").next().unwrap();
                let err = got.unwrap_err().to_string();
                assert_eq!(err, format!("image {w}x{h} has aspect ratio {ratio}, over the limit of 200"));
            }
            out => {
                let want = usizes(out);
                let got = got.unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(vec![got.0 as usize, got.1 as usize], want, "{case}");
            }
        }
    }
}

#[test]
fn smart_resize_rules() {
    // 42/28 = 1.5 rounds to 2, 70/28 = 2.5 rounds to 2 (half to even).
    assert_eq!(smart_resize(42, 70, 28, 3136, 1_003_520).unwrap(), (56, 56));
    // Over max_pixels: floor after scaling, never below the factor.
    assert_eq!(smart_resize(10, 1900, 28, 3136, 50_000).unwrap(), (28, 784));
    let e = smart_resize(20, 5000, 28, 3136, 1_003_520).unwrap_err();
    assert_eq!(e.to_string(), "image 5000x20 has aspect ratio 250.0, over the limit of 200");
    assert!(smart_resize(14, 2800, 28, 3136, 1_003_520).is_ok(), "200 is allowed");
    let e = smart_resize(0, 5, 28, 1, 10).unwrap_err().to_string();
    assert!(e.contains("image has zero size (5x0)"), "{e}");
}

/// patch_size 1, merge 2, temporal 2 on a 4x2 (w x h) image whose pixel (x, y) holds x + 10y in
/// every channel: rows go block by block (2x2 blocks), raster order inside a block.
#[test]
fn patch_order_is_merge_blocks_then_raster() {
    let cfg = Qwen2VlImageProcessorConfig {
        patch_size: 1,
        merge_size: 2,
        do_resize: false,
        do_rescale: false,
        do_normalize: false,
        ..Default::default()
    };
    let img = RgbImage::from_fn(4, 2, |x, y| Rgb([(x + 10 * y) as u8; 3]));
    let p = cfg.preprocess_image(&img).unwrap();
    assert_eq!((p.rows, p.cols, p.grid_thw), (8, 6, [1, 2, 4]));
    // Each row is (channel, temporal) = 3 x 2 copies of one pixel.
    let firsts: Vec<f32> = p.data.chunks(6).map(|r| r[0]).collect();
    assert_eq!(firsts, [0., 1., 10., 11., 2., 3., 12., 13.]);
    assert!(p.data.chunks(6).all(|r| r.iter().all(|&v| v == r[0])));
}

#[test]
fn unaligned_image_without_resize_is_refused() {
    let cfg = Qwen2VlImageProcessorConfig { do_resize: false, ..Default::default() };
    let e = cfg.preprocess_image(&RgbImage::new(30, 28)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "image processor config: `do_resize`: is false, so the 30x28 image must already be a \
         multiple of patch_size * merge_size = 28 on both sides"
    );
}

/// transformers' `Qwen2VLImageProcessorPil` on the noisy PNGs: upscaled by min_pixels,
/// downscaled by max_pixels (4.x config layout), odd patch sizes with LANCZOS, and the
/// rescale / normalise switches.
#[test]
fn image_matches_transformers_pil_backend() {
    let index = index();
    let blob = fx::read("qwen2_vl/pixels.bin");
    let mut worst = 0f32;
    for entry in index["image"].as_array().unwrap() {
        let what = entry["case"].as_str().unwrap();
        let cfg: Qwen2VlImageProcessorConfig = serde_json::from_value(entry["config"].clone()).unwrap();
        let img = fx::input_image(entry["image"].as_str().unwrap());
        let out = cfg.preprocess_image(&img).unwrap();
        assert_eq!(out.grid_thw.to_vec(), usizes(&entry["grid_thw"]), "{what}");
        assert_eq!(vec![out.rows, out.cols], usizes(&entry["shape"]), "{what}");
        let (gh, gw) = (out.grid_thw[1] as u32, out.grid_thw[2] as u32);
        let p = cfg.patch_size as u32;
        assert_eq!(cfg.output_size(img.width(), img.height()).unwrap(), (gh * p, gw * p));
        let diff = max_diff(&out.data, &floats(fx::range(&blob, entry)), what);
        assert!(diff <= 1e-5, "{what}: max difference {diff}");
        worst = worst.max(diff);
    }
    // Same arithmetic as numpy, so in practice identical.
    assert_eq!(worst, 0.0);
}

fn video_frames(entry: &Value, blob: &[u8]) -> Vec<RgbImage> {
    let size = usizes(&entry["frame_size"]);
    let (w, h) = (size[0] as u32, size[1] as u32);
    let bytes = fx::range(blob, &entry["frames_blob"]);
    let frames: Vec<RgbImage> =
        bytes.chunks_exact((w * h * 3) as usize).map(|f| RgbImage::from_raw(w, h, f.to_vec()).unwrap()).collect();
    assert_eq!(frames.len() as u64, entry["frames"].as_u64().unwrap());
    frames
}

/// transformers' `Qwen2VLVideoProcessor` (torchvision) on frames it does not resize: 4 frames,
/// 3 frames (padded with the last), rescale-only and normalise-only arithmetic with odd patch
/// sizes; frames resized by Pillow before the processor (Ocular's resize path); and the grid
/// alone where torchvision resizes (defaults, cap_pixels_per_frame).
#[test]
fn video_matches_transformers_video_processor() {
    let index = index();
    let (pixels, frames_blob) = (fx::read("qwen2_vl/pixels.bin"), fx::read("qwen2_vl/frames.bin"));
    let mut compared = 0;
    for entry in index["video"].as_array().unwrap() {
        let what = entry["case"].as_str().unwrap();
        let cfg: Qwen2VlVideoProcessorConfig = serde_json::from_value(entry["config"].clone()).unwrap();
        let frames = video_frames(entry, &frames_blob);
        let out = cfg.preprocess_video(&frames).unwrap();
        assert_eq!(out.grid_thw.to_vec(), usizes(&entry["grid_thw"]), "{what}");
        assert_eq!(vec![out.rows, out.cols], usizes(&entry["shape"]), "{what}");
        if entry.get("offset").is_some() {
            let diff = max_diff(&out.data, &floats(fx::range(&pixels, entry)), what);
            assert_eq!(diff, 0.0, "{what}: max difference {diff}");
            compared += 1;
        }
    }
    assert_eq!(compared, 5);
}

#[test]
fn three_frames_are_padded_with_the_last() {
    let cfg = Qwen2VlVideoProcessorConfig::default().with_pixel_limits(Some(784), None);
    let frames: Vec<RgbImage> = (0..3u8).map(|i| RgbImage::from_pixel(28, 28, Rgb([i * 50; 3]))).collect();
    let p = cfg.preprocess_video(&frames).unwrap();
    assert_eq!(p.grid_thw, [2, 2, 2]);
    // A row is (channel, t, 14, 14).
    let frame_of = |row: usize, c: usize, t: usize| p.data[row * p.cols + (c * 2 + t) * 196];
    let value = |v: u8| cfg.to_chw_like_torch(&RgbImage::from_pixel(1, 1, Rgb([v; 3])))[0];
    // Rows 0..4 are t = 0 (frames 0, 1); rows 4..8 are t = 1 (frames 2, 2).
    assert_eq!(frame_of(0, 0, 0), value(0));
    assert_eq!(frame_of(0, 0, 1), value(50));
    assert_eq!(frame_of(5, 0, 0), value(100));
    assert_eq!(frame_of(5, 0, 1), value(100));
}

#[test]
fn video_errors() {
    let cfg = Qwen2VlVideoProcessorConfig::default();
    assert_eq!(cfg.preprocess_video(&[]).unwrap_err().to_string(), "video has no frames");
    let mut frames = vec![RgbImage::new(84, 56); 3];
    frames.push(RgbImage::new(64, 48));
    assert_eq!(
        cfg.preprocess_video(&frames).unwrap_err().to_string(),
        "frame 3 is 64x48 but frame 0 is 84x56; all frames of a video must be the same size"
    );
    let e = cfg.preprocess_video(&[RgbImage::new(5000, 20)]).unwrap_err();
    assert_eq!(e.to_string(), "image 5000x20 has aspect ratio 250.0, over the limit of 200");
}

#[test]
fn cap_pixels_per_frame_shares_the_token_budget() {
    let cfg: Qwen2VlVideoProcessorConfig = serde_json::from_str(
        r#"{"cap_pixels_per_frame": true, "max_video_tokens": 8,
            "size": {"shortest_edge": 784, "longest_edge": 78400}}"#,
    )
    .unwrap();
    // int(8 * 28 * 28 * 0.9) = 5644; * 2 // 4 frames = 2822; floor int(784 * 1.05) = 823.
    assert_eq!(cfg.max_pixels_for(4), 2822);
    assert_eq!(cfg.max_pixels_for(1000), 823);
    assert_eq!(cfg.output_size(4, 84, 56).unwrap(), (28, 56));
    let uncapped = Qwen2VlVideoProcessorConfig { cap_pixels_per_frame: false, ..cfg };
    assert_eq!(uncapped.output_size(4, 84, 56).unwrap(), (56, 84));
}

fn image_config(json: &str) -> Result<Qwen2VlImageProcessorConfig, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

fn video_config(json: &str) -> Qwen2VlVideoProcessorConfig {
    serde_json::from_str(json).unwrap()
}

#[test]
fn both_layouts_of_the_pixel_limits() {
    // 5.x: `size` only.
    let five = image_config(r#"{"size": {"shortest_edge": 784, "longest_edge": 3136}, "resample": 3}"#);
    assert_eq!((five.as_ref().unwrap().min_pixels, five.unwrap().max_pixels), (784, 3136));
    // 4.x: top-level keys win over a stale `size`, and fill in a missing one.
    let four = image_config(
        r#"{"min_pixels": 784, "max_pixels": 3136,
            "size": {"shortest_edge": 3136, "longest_edge": 12845056}}"#,
    )
    .unwrap();
    assert_eq!((four.min_pixels, four.max_pixels), (784, 3136));
    let one = image_config(r#"{"max_pixels": 6272}"#).unwrap();
    assert_eq!((one.min_pixels, one.max_pixels), (3136, 6272));
    // transformers 4.45's `size` keys.
    let old = image_config(r#"{"size": {"min_pixels": 100, "max_pixels": 1000}}"#).unwrap();
    assert_eq!((old.min_pixels, old.max_pixels), (100, 1000));
    // Nothing given: the image processor's defaults.
    assert_eq!(image_config("{}").unwrap(), Qwen2VlImageProcessorConfig::default());
    assert_eq!((one.patch_size, one.temporal_patch_size, one.merge_size), (14, 2, 2));
    assert_eq!(one.resample, Filter::Bicubic);
    assert_eq!(one.image_mean, OPENAI_CLIP_MEAN);
}

#[test]
fn video_defaults_differ_only_in_pixel_limits() {
    let v = video_config("{}");
    assert_eq!((v.frame.min_pixels, v.frame.max_pixels), (100_352, 602_112));
    assert!(!v.cap_pixels_per_frame);
    assert_eq!(v.max_video_tokens, 128_000);
    // An image config used for videos (no video config in the checkpoint).
    let v = video_config(
        r#"{"min_pixels": 3136, "max_pixels": 6272, "patch_size": 14,
            "image_processor_type": "Qwen2VLImageProcessor", "cap_pixels_per_frame": null}"#,
    );
    assert_eq!((v.frame.min_pixels, v.frame.max_pixels), (3136, 6272));
    let v = video_config(r#"{"cap_pixels_per_frame": true, "max_video_tokens": 8, "temporal_patch_size": 4}"#);
    assert!(v.cap_pixels_per_frame);
    assert_eq!(v.max_video_tokens, 8);
    assert_eq!(v.seconds_per_grid_t(2.0), 2.0);
}

#[test]
fn per_call_pixel_limits() {
    let cfg = Qwen2VlImageProcessorConfig::default().with_pixel_limits(Some(784), None);
    assert_eq!((cfg.min_pixels, cfg.max_pixels), (784, 1_003_520));
    let v = Qwen2VlVideoProcessorConfig::default().with_pixel_limits(None, Some(5000));
    assert_eq!((v.frame.min_pixels, v.frame.max_pixels), (100_352, 5000));
}

#[test]
fn bad_configs_name_the_field() {
    let e = image_config(r#"{"size": {"shortest_edge": 3136}}"#).unwrap_err();
    assert!(e.contains("`size`: needs both `shortest_edge`"), "{e}");
    let e = image_config(r#"{"size": {"height": 28, "width": 28}}"#).unwrap_err();
    assert!(e.contains("`size`: unsupported key `height`"), "{e}");
    let e = image_config(r#"{"size": 224}"#).unwrap_err();
    assert!(e.contains("`size`: expected an object, got 224"), "{e}");
    let e = image_config(r#"{"resample": null}"#).unwrap_err();
    assert!(e.contains("`resample`: expected a PIL filter code"), "{e}");
    let e = image_config(r#"{"resample": 7}"#).unwrap_err();
    assert!(e.contains("unknown PIL resampling filter code 7"), "{e}");
    let e = image_config(r#"{"image_std": [1, 2]}"#).unwrap_err();
    assert!(e.contains("expected 3 numbers"), "{e}");
    let cfg = image_config(r#"{"size": {"shortest_edge": 0, "longest_edge": 10}}"#).unwrap();
    let e = cfg.validate().unwrap_err().to_string();
    assert_eq!(e, "image processor config: `min_pixels`: must be at least 1");
    let unused = Qwen2VlImageProcessorConfig { do_resize: false, ..cfg };
    assert!(unused.validate().is_ok(), "limits are unused without resizing");
    let e = Qwen2VlImageProcessorConfig { merge_size: 0, ..Default::default() }.validate().unwrap_err().to_string();
    assert_eq!(e, "image processor config: `merge_size`: must be at least 1");
}
