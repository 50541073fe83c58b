//! Boxes from answers, placed on the original image through each family's own convention,
//! using the real preprocessing of the Qwen2-VL fixtures (the models' random weights answer
//! nonsense, so the answers here are written by hand).

use std::path::{Path, PathBuf};

use ocular::image::{load_image, ImageLimits};
use ocular::load::LoadOptions;
use ocular::models::Media;
use ocular::pipeline::Pipeline;
use ocular::prompt::Message;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2_vl").join(case)
}

/// The pipeline, the prompt prepared with the case's first image, and that image's size.
fn prepared(case: &str) -> (Pipeline, ocular::models::Prepared, (u32, u32)) {
    let dir = fixture(case);
    let pipeline = Pipeline::load(dir.join("model"), &LoadOptions::default()).unwrap();
    let image = load_image(&dir.join("img0.png"), &ImageLimits::default()).unwrap();
    let size = image.dimensions();
    let question = pipeline.model.grounding_prompt("the red car").unwrap();
    let prepared = pipeline.prepare_chat(&[Message::user(&question, 1)], &Media::images(vec![image])).unwrap();
    (pipeline, prepared, size)
}

#[test]
fn qwen2_vl_boxes_are_on_a_1000_grid_over_the_image() {
    let (pipeline, prepared, (w, h)) = prepared("image_upscaled");
    assert_eq!(pipeline.model.grounding_prompt("the red car").unwrap(), "Locate the red car.");
    let answer = "<|object_ref_start|>the red car<|object_ref_end|><|box_start|>(100,200),(500,1000)<|box_end|>";
    let found = pipeline.boxes(answer, &prepared, (w, h)).unwrap();
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    assert_eq!(found.boxes.len(), 1);
    assert_eq!(found.boxes[0].label.as_deref(), Some("the red car"));
    let want = [0.1 * w as f32, 0.2 * h as f32, 0.5 * w as f32, h as f32];
    for (a, b) in found.boxes[0].bbox.iter().zip(want) {
        assert!((a - b).abs() < 1e-3, "{:?} vs {want:?}", found.boxes[0].bbox);
    }
}

#[test]
fn qwen2_5_vl_boxes_are_pixels_of_the_resized_image() {
    let (pipeline, prepared, (w, h)) = prepared("qwen2_5_vl_image");
    // The model saw the image resized to its grid times the 14-pixel patch.
    let [_, gh, gw] = prepared.media[0].grid_thw;
    let (rw, rh) = (gw * 14, gh * 14);
    assert_ne!((rw as u32, rh as u32), (w, h), "the fixture image is resized");
    let answer = format!("```json\n[{{\"bbox_2d\": [0, 0, {}, {rh}], \"label\": \"left half\"}}]\n```", rw / 2);
    let found = pipeline.boxes(&answer, &prepared, (w, h)).unwrap();
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    let b = found.boxes[0].bbox;
    let half = (rw / 2) as f32 * w as f32 / rw as f32;
    assert!((b[2] - half).abs() < 1e-3 && (b[3] - h as f32).abs() < 1e-3, "{b:?}");
}

#[test]
fn malformed_box_text_is_reported_not_fatal() {
    let (pipeline, prepared, size) = prepared("image_upscaled");
    let answer = "<|box_start|>(12,abc),(3,4)<|box_end|> and <|box_start|>(1,2),(3,4)<|box_end|> <|box_start|>(5,6),(2000,7)<|box_end|>";
    let found = pipeline.boxes(answer, &prepared, size).unwrap();
    assert_eq!(found.boxes.len(), 1, "{found:?}");
    assert_eq!(found.problems.len(), 2, "{found:?}");
    assert!(found.problems[0].reason.contains("abc"), "{:?}", found.problems[0]);
}

#[test]
fn families_without_boxes_say_so() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llava/one_image");
    let pipeline = Pipeline::load(dir.join("model"), &LoadOptions::default()).unwrap();
    assert!(pipeline.model.grounding_prompt("x").is_none());
}

#[test]
fn box_markers_survive_into_the_text_boxes_are_read_from() {
    // Qwen2-VL's box markers are special tokens: the streamed text drops them, raw_text keeps them.
    let (pipeline, prepared, size) = prepared("image_upscaled");
    let tokens = pipeline.model.tokenizer().encode("<|box_start|>(100,200),(300,400)<|box_end|>", false).unwrap();
    let generation = ocular::pipeline::Generation {
        text: pipeline.model.tokenizer().decode(&tokens, true).unwrap(),
        tokens,
        prompt_tokens: prepared.ids.len(),
        finish_reason: ocular::pipeline::FinishReason::Stop,
        prefill_secs: 0.0,
        decode_secs: 0.0,
    };
    assert!(pipeline.boxes(&generation.text, &prepared, size).unwrap().boxes.is_empty());
    let raw = pipeline.raw_text(&generation).unwrap();
    assert_eq!(pipeline.boxes(&raw, &prepared, size).unwrap().boxes.len(), 1);
}
