//! LLaVA against transformers: fixtures made by `scripts/fixtures/llava.py` (tiny random models,
//! noisy images) hold transformers' pixel values, token ids, last-position logits and greedy
//! tokens. Ocular must match them: pixels within 1e-5, logits within 1e-4, tokens exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ocular::image::{load_image, ImageLimits};
use ocular::load::LoadOptions;
use ocular::pipeline::{GenerateOptions, Pipeline};
use ocular::prompt::Message;
use serde_json::Value;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llava").join(case)
}

struct Case {
    dir: PathBuf,
    meta: Value,
    reference: HashMap<String, Tensor>,
    pipeline: Pipeline,
    images: Vec<ocular::RgbImage>,
}

fn load_case(case: &str) -> Case {
    let dir = fixture(case);
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let reference = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let pipeline = Pipeline::load(dir.join("model"), &LoadOptions::default()).unwrap_or_else(|e| panic!("{case}: {e}"));
    let images = meta["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| load_image(&dir.join(name.as_str().unwrap()), &ImageLimits::default()).unwrap())
        .collect();
    Case { dir, meta, reference, pipeline, images }
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check(case_name: &str) {
    let case = load_case(case_name);
    let c = &case;
    let raw = c.meta["raw_prompt"].as_str().unwrap();
    let prepared = c.pipeline.prepare_raw(raw, &ocular::models::Media::images(c.images.clone())).unwrap();

    // Preprocessing: token ids after placeholder expansion, and pixel values.
    assert_eq!(prepared.ids, ids(&c.reference["input_ids"]), "{case_name}: input ids");
    let ref_pixels = &c.reference["pixel_values"];
    assert_eq!(prepared.media.len(), ref_pixels.dim(0).unwrap(), "{case_name}: image count");
    for (i, m) in prepared.media.iter().enumerate() {
        let ours = m.pixels.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let theirs = ref_pixels.get(i).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = max_abs_diff(&ours, &theirs);
        assert!(d <= 1e-5, "{case_name}: image {i} pixel values differ by {d}");
    }

    // Last-position logits.
    let logits = c.pipeline.last_logits(&prepared).unwrap();
    let theirs = c.reference["logits_last"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let d = max_abs_diff(&logits, &theirs);
    assert!(d <= 1e-4, "{case_name}: last logits differ by {d}");

    // Greedy decoding through the KV cache, token for token.
    let want = ids(&c.reference["greedy_ids"]);
    let model = &c.pipeline.model;
    let mut state = model.new_state();
    let mut next = argmax(&model.prefill(&prepared, &mut state).unwrap().to_vec1::<f32>().unwrap());
    let mut got = vec![next];
    while got.len() < want.len() {
        next = argmax(&model.decode(next, &mut state).unwrap().to_vec1::<f32>().unwrap());
        got.push(next);
    }
    assert_eq!(got, want, "{case_name}: greedy tokens");

    // The chat path: template, ids, and the generated text as transformers decodes it.
    let messages: Vec<Message> = serde_json::from_value(c.meta["chat_messages"].clone()).unwrap();
    let (text, _) = c.pipeline.render_chat(&messages).unwrap();
    assert_eq!(text, c.meta["chat_prompt_text"].as_str().unwrap(), "{case_name}: rendered chat prompt");
    let chat = c.pipeline.prepare_chat(&messages, &ocular::models::Media::images(c.images.clone())).unwrap();
    assert_eq!(chat.ids, ids(&c.reference["chat_input_ids"]), "{case_name}: chat input ids");
    let opts =
        GenerateOptions { sampling: ocular::generate::SamplingParams::greedy(), max_new_tokens: 16, stop: vec![] };
    let mut streamed = String::new();
    let generation = c.pipeline.generate(&chat, &opts, &mut |t| streamed.push_str(t)).unwrap();
    let want_ids = ids(&c.reference["chat_greedy_ids"]);
    assert_eq!(generation.tokens[..], want_ids[..generation.tokens.len()], "{case_name}: chat greedy tokens");
    // transformers' text is of all 16 tokens; where an EOS came first, generation stops there.
    let want_text = match c.meta["chat_greedy_first_eos_index"].as_u64() {
        None => c.meta["chat_greedy_text"].as_str().unwrap().to_string(),
        Some(eos) => c.pipeline.model.tokenizer().decode(&want_ids[..eos as usize], true).unwrap(),
    };
    assert_eq!(generation.text, want_text, "{case_name}: chat answer text");
    assert_eq!(streamed, want_text, "{case_name}: streamed chat answer");
    let _ = &c.dir;
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn one_image() {
    check("one_image");
}

#[test]
fn two_images() {
    check("two_images");
}

#[test]
fn crop_nonsquare() {
    check("crop_nonsquare");
}

#[test]
fn pad_square() {
    check("pad_square");
}

#[test]
fn gqa() {
    check("gqa");
}

#[test]
fn full_strategy() {
    check("full_strategy");
}

#[test]
fn hub_layout() {
    check("hub_layout");
}

#[test]
fn linear_projector() {
    check("linear_projector");
}
