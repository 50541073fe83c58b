//! The `ocular` binary on Qwen2-VL fixtures: answers equal to transformers' for an image and a
//! video, and one-line errors for the bad media a user can give.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

mod common;

use common::{ocular, scratch};

fn fixture(case: &str) -> PathBuf {
    common::fixture("qwen2_vl", case)
}

fn expect_error(o: &Output, needles: &[&str]) {
    common::expect_error(o, 1, needles)
}

fn case_json(case: &str) -> Value {
    common::case_json("qwen2_vl", case)
}

fn model(case: &str) -> String {
    fixture(case).join("model").to_str().unwrap().to_string()
}

/// `ocular run` on a one-turn fixture prints transformers' greedy answer.
fn run_matches_transformers(case: &str, media_flag: &str, media: &Path) {
    let meta = case_json(case);
    let question = common::text_of(&meta["chat_messages"][0]);
    let args = ["run", "-q", "--greedy", "--max-new-tokens", "16", "--model", &model(case)];
    let out = ocular(&[&args[..], &[media_flag, media.to_str().unwrap(), &question]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}\n", meta["chat_greedy_text"].as_str().unwrap()));
}

#[test]
fn run_answers_about_an_image_as_transformers_does() {
    run_matches_transformers("image_upscaled", "--image", &fixture("image_upscaled").join("img0.png"));
}

#[test]
fn run_watches_a_folder_of_frames_as_transformers_does() {
    run_matches_transformers("video", "--video", &fixture("video"));
}

#[test]
fn an_extreme_aspect_ratio_is_refused() {
    let dir = scratch("aspect");
    let path = dir.join("strip.png");
    image::RgbImage::from_pixel(600, 2, image::Rgb([9, 9, 9])).save(&path).unwrap();
    let out = ocular(&["run", "-q", "--model", &model("image_upscaled"), "--image", path.to_str().unwrap(), "hi"]);
    expect_error(&out, &["aspect ratio 300", "over the limit of 200"]);
}

#[test]
fn bad_videos_are_named() {
    let dir = scratch("videos");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = ocular(&["run", "-q", "--model", &model("video"), "--video", empty.to_str().unwrap(), "hi"]);
    expect_error(&out, &["empty", "has no video frames"]);

    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    image::RgbImage::new(56, 56).save(mixed.join("f0.png")).unwrap();
    image::RgbImage::new(84, 56).save(mixed.join("f1.png")).unwrap();
    let out = ocular(&["run", "-q", "--model", &model("video"), "--video", mixed.to_str().unwrap(), "hi"]);
    expect_error(&out, &["f1.png", "84x56", "56x56"]);
}

#[test]
fn media_must_match_their_placeholders() {
    let out = ocular(&[
        "logits",
        "-q",
        "--raw",
        "--model",
        &model("video"),
        "--prompt",
        "<|vision_start|><|video_pad|><|vision_end|>What?",
    ]);
    expect_error(&out, &["1 <|video_pad|> placeholder(s) but 0 video(s)"]);
    let img = fixture("image_upscaled").join("img0.png");
    let out = ocular(&[
        "logits",
        "-q",
        "--raw",
        "--model",
        &model("image_upscaled"),
        "--image",
        img.to_str().unwrap(),
        "--prompt",
        "no placeholder",
    ]);
    expect_error(&out, &["0 <|image_pad|> placeholder(s) but 1 image(s)"]);
}

#[test]
fn logits_raw_with_a_video_follows_the_contract() {
    let dir = fixture("video");
    let meta = case_json("video");
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &candle_core::Device::Cpu).unwrap();
    let out = ocular(&[
        "logits",
        "-q",
        "--raw",
        "--model",
        &model("video"),
        "--video",
        dir.to_str().unwrap(),
        "--prompt",
        meta["raw_prompt"].as_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<i64> = json["token_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let want = reference["input_ids"].to_dtype(candle_core::DType::I64).unwrap().to_vec1::<i64>().unwrap();
    assert_eq!(ids, want);
    let logits: Vec<f64> = json["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want = reference["logits_last"].to_vec1::<f32>().unwrap();
    let d = logits.iter().zip(&want).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
    assert!(d <= 1e-4, "logits differ by {d}");
}

#[test]
fn ground_prints_json_boxes_and_draws_the_image() {
    let img = fixture("image_upscaled").join("img0.png");
    let out_png = scratch("ground").join("out.png");
    let out = ocular(&[
        "ground",
        "-q",
        "--max-new-tokens",
        "8",
        "--model",
        &model("image_upscaled"),
        "--image",
        img.to_str().unwrap(),
        "--draw",
        out_png.to_str().unwrap(),
        "the red car",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A random model finds nothing, but the output is still the documented JSON array.
    let boxes: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(boxes.is_array(), "{boxes}");
    let drawn = image::open(&out_png).unwrap();
    assert_eq!((drawn.width(), drawn.height()), image::image_dimensions(&img).unwrap());

    let llava = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llava/one_image");
    let out = ocular(&[
        "ground",
        "-q",
        "--model",
        llava.join("model").to_str().unwrap(),
        "--image",
        llava.join("img0.png").to_str().unwrap(),
        "the red car",
    ]);
    expect_error(&out, &["llava", "do not answer with boxes"]);
}

#[test]
fn run_json_reports_text_boxes_and_usage() {
    let meta = case_json("image_upscaled");
    let img = fixture("image_upscaled").join("img0.png");
    let out = ocular(&[
        "run",
        "-q",
        "--json",
        "--greedy",
        "--max-new-tokens",
        "16",
        "--model",
        &model("image_upscaled"),
        "--image",
        img.to_str().unwrap(),
        &common::text_of(&meta["chat_messages"][0]),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["text"], meta["chat_greedy_text"]);
    assert!(json["boxes"].is_array() && json["problems"].is_array(), "{json}");
    assert_eq!(json["usage"]["completion_tokens"], 16);
    assert_eq!(json["finish_reason"], "length");
}
