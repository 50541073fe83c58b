//! Qwen2-VL and Qwen2.5-VL against transformers: fixtures made by `scripts/fixtures/qwen2_vl.py`
//! hold transformers' patches, grids, 3-D position ids, last-position logits and greedy tokens.
//! Ocular must match: pixels within 1e-5, logits within 1e-4, ids and positions exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use ocular::image::{load_image, ImageLimits, Video};
use ocular::load::{LoadOptions, ModelDir};
use ocular::models::qwen2_vl::Qwen2Vl;
use ocular::models::{Media, MediaKind, VisionLanguageModel};
use ocular::pipeline::{GenerateOptions, Pipeline};
use ocular::prompt::Message;
use serde_json::Value;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2_vl").join(case)
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.flatten_all().unwrap().to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap()
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn argmax(v: &[f32]) -> u32 {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best }) as u32
}

/// The case's images and videos, videos at the frame rate the reference was told.
fn media(dir: &Path, meta: &Value) -> Media {
    let limits = ImageLimits::default();
    let images = meta["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| load_image(&dir.join(n.as_str().unwrap()), &limits).unwrap())
        .collect();
    let fps_of = |i: usize| meta["processor_kwargs"]["video_metadata"][i]["fps"].as_f64().unwrap_or(2.0);
    let videos = meta["videos"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, frames)| {
            let frames: Vec<(String, ocular::RgbImage)> = frames
                .as_array()
                .unwrap()
                .iter()
                .map(|n| {
                    (n.as_str().unwrap().to_string(), load_image(&dir.join(n.as_str().unwrap()), &limits).unwrap())
                })
                .collect();
            let n = frames.len();
            Video { frames, indices: (0..n).collect(), total_frames: n, source_fps: fps_of(i), fps: fps_of(i) }
        })
        .collect();
    let kw = &meta["processor_kwargs"];
    // Limits given per call, either as such or in transformers 5's `size` form.
    let min_pixels = kw["min_pixels"].as_u64().or(kw["size"]["shortest_edge"].as_u64());
    let max_pixels = kw["max_pixels"].as_u64().or(kw["size"]["longest_edge"].as_u64());
    Media { images, videos, min_pixels, max_pixels }
}

fn check(case: &str) {
    let dir = fixture(case);
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let reference: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let model_dir = ModelDir::open(dir.join("model")).unwrap();
    let model = Qwen2Vl::load(&model_dir, model_dir.config().unwrap(), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let media = media(&dir, &meta);
    let prepared = model.prepare(meta["raw_prompt"].as_str().unwrap(), &media, true).unwrap();

    // Preprocessing: ids, grids and patches of each kind.
    let ids: Vec<i64> = prepared.ids.iter().map(|&i| i as i64).collect();
    assert_eq!(ids, ints(&reference["input_ids"]), "{case}: input ids");
    for (kind, pixels_key, grid_key) in
        [("image", "pixel_values", "image_grid_thw"), ("video", "pixel_values_videos", "video_grid_thw")]
    {
        let ours: Vec<_> =
            prepared.media.iter().filter(|m| (m.kind == MediaKind::Image) == (kind == "image")).collect();
        let Some(ref_pixels) = reference.get(pixels_key) else {
            assert!(ours.is_empty(), "{case}: {kind}s where the reference has none");
            continue;
        };
        let grids: Vec<i64> = ours.iter().flat_map(|m| m.grid_thw.map(|v| v as i64)).collect();
        assert_eq!(grids, ints(&reference[grid_key]), "{case}: {grid_key}");
        let pixels: Vec<f32> = ours.iter().flat_map(|m| floats(&m.pixels)).collect();
        let theirs = floats(ref_pixels);
        let d = max_abs_diff(&pixels, &theirs);
        assert!(d <= 1e-5, "{case}: {pixels_key} differ by {d}");
    }

    // 3-D positions and the offset carried into decoding.
    let (positions, delta) = model.position_ids(&prepared).unwrap();
    let n = positions.len();
    let want = ints(&reference["position_ids"]);
    for axis in 0..3 {
        let ours: Vec<i64> = positions.iter().map(|p| p[axis]).collect();
        assert_eq!(ours, want[axis * n..(axis + 1) * n], "{case}: position ids, axis {axis}");
    }
    assert_eq!(delta, ints(&reference["rope_deltas"])[0], "{case}: rope delta");

    // Last-position logits, then 16 greedy steps through the KV cache.
    let mut state = model.new_state();
    let logits = model.prefill(&prepared, &mut state).unwrap().to_vec1::<f32>().unwrap();
    let d = max_abs_diff(&logits, &floats(&reference["logits_last"]));
    assert!(d <= 1e-4, "{case}: last logits differ by {d}");
    let want: Vec<u32> = ints(&reference["greedy_ids"]).into_iter().map(|v| v as u32).collect();
    let mut got = vec![argmax(&logits)];
    while got.len() < want.len() {
        got.push(argmax(&model.decode(*got.last().unwrap(), &mut state).unwrap().to_vec1::<f32>().unwrap()));
    }
    assert_eq!(got, want, "{case}: greedy tokens");

    // The chat path through the model's template.
    let pipeline = Pipeline::load(dir.join("model"), &LoadOptions::default()).unwrap();
    let messages: Vec<Message> = serde_json::from_value(meta["chat_messages"].clone()).unwrap();
    let (text, _) = pipeline.render_chat(&messages).unwrap();
    assert_eq!(text, meta["chat_prompt_text"].as_str().unwrap(), "{case}: rendered chat prompt");
    let chat = pipeline.prepare_chat(&messages, &media).unwrap();
    let chat_ids: Vec<i64> = chat.ids.iter().map(|&i| i as i64).collect();
    assert_eq!(chat_ids, ints(&reference["chat_input_ids"]), "{case}: chat input ids");
    let opts =
        GenerateOptions { sampling: ocular::generate::SamplingParams::greedy(), max_new_tokens: 16, stop: vec![] };
    let generation = pipeline.generate(&chat, &opts, &mut |_| {}).unwrap();
    let want: Vec<u32> = ints(&reference["chat_greedy_ids"]).into_iter().map(|v| v as u32).collect();
    assert_eq!(generation.tokens[..], want[..generation.tokens.len()], "{case}: chat greedy tokens");
    if meta["chat_greedy_stopped_at_eos"] == false {
        assert_eq!(generation.text, meta["chat_greedy_text"].as_str().unwrap(), "{case}: chat answer text");
    }
}

#[test]
fn image_upscaled() {
    check("image_upscaled");
}

#[test]
fn image_downscaled() {
    check("image_downscaled");
}

#[test]
fn two_images() {
    check("two_images");
}

#[test]
fn video() {
    check("video");
}

#[test]
fn text_only() {
    check("text_only");
}

#[test]
fn tied_head() {
    check("tied_head");
}

#[test]
fn hub_layout() {
    check("hub_layout");
}

#[test]
fn qwen2_5_vl_image() {
    check("qwen2_5_vl_image");
}

#[test]
fn qwen2_5_vl_video() {
    check("qwen2_5_vl_video");
}
