//! The `ocular` binary end to end: answers equal to transformers' on a fixture, the logits
//! contract, and a one-line error with exit code 1 (2 for usage) for each kind of bad input.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

mod common;

use common::{expect_error, ocular, stderr, stdout, text_of};

fn fixture(case: &str) -> PathBuf {
    common::fixture("llava", case)
}

/// A scratch copy of a fixture model folder, to break in one way.
struct Scratch(PathBuf);

impl Scratch {
    fn copy_of(case: &str, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ocular-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixture(case).join("model")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        Self(dir)
    }

    fn empty(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ocular-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn case_json(case: &str) -> Value {
    common::case_json("llava", case)
}

#[test]
fn run_prints_the_same_greedy_text_as_transformers() {
    let dir = fixture("one_image");
    let meta = case_json("one_image");
    // The fixture's conversation: a system message, then one image and a question.
    let (system, question) = (text_of(&meta["chat_messages"][0]), text_of(&meta["chat_messages"][1]));
    let out = ocular(&[
        "run",
        "--quiet",
        "--greedy",
        "--max-new-tokens",
        "16",
        "--system",
        &system,
        "--model",
        dir.join("model").to_str().unwrap(),
        "--image",
        dir.join("img0.png").to_str().unwrap(),
        &question,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", meta["chat_greedy_text"].as_str().unwrap()));
}

#[test]
fn logits_raw_follows_the_contract() {
    let dir = fixture("two_images");
    let meta = case_json("two_images");
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &candle_core::Device::Cpu).unwrap();
    let mut args = vec![
        "logits".to_string(),
        "--quiet".into(),
        "--raw".into(),
        "--model".into(),
        dir.join("model").to_str().unwrap().into(),
    ];
    for img in meta["images"].as_array().unwrap() {
        args.push("--image".into());
        args.push(dir.join(img.as_str().unwrap()).to_str().unwrap().into());
    }
    args.push("--prompt".into());
    args.push(meta["raw_prompt"].as_str().unwrap().into());
    let out = Command::new(env!("CARGO_BIN_EXE_ocular")).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    let ids: Vec<i64> = json["token_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let want_ids = reference["input_ids"]
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap();
    assert_eq!(ids, want_ids);
    let logits: Vec<f64> = json["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want = reference["logits_last"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(logits.len(), want.len());
    let d = logits.iter().zip(&want).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
    assert!(d <= 1e-4, "logits differ by {d}");
}

#[test]
fn info_names_the_parts() {
    let out = ocular(&["info", "--quiet", "--json", "--model", fixture("one_image").join("model").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["family"], "llava");
    for part in ["vision tower", "projector", "language model"] {
        assert!(json["parameters"][part].as_u64().unwrap() > 0, "{part}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = ocular(&["run", "--no-such-flag", "hello"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = ocular(&["run"]);
    assert_eq!(out.status.code(), Some(2), "a question is required: {}", stderr(&out));
}

#[test]
fn missing_config_is_named() {
    let s = Scratch::empty("noconfig");
    expect_error(&ocular(&["info", "--model", s.path()]), 1, &["config.json", "missing"]);
    expect_error(&ocular(&["info", "--model", "/nonexistent/model"]), 1, &["/nonexistent/model", "not found"]);
}

#[test]
fn unsupported_model_type_lists_the_supported_ones() {
    let s = Scratch::empty("bert");
    std::fs::write(s.0.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    expect_error(&ocular(&["info", "--model", s.path()]), 1, &["\"bert\"", "supported: llava"]);
    std::fs::write(s.0.join("config.json"), "{ not json").unwrap();
    expect_error(&ocular(&["info", "--model", s.path()]), 1, &["config.json", "not valid JSON"]);
}

fn rewrite_weights(s: &Scratch, edit: impl FnOnce(&mut std::collections::HashMap<String, candle_core::Tensor>)) {
    let path = s.0.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let s = Scratch::copy_of("one_image", "missing-tensor");
    let name = "language_model.model.layers.1.mlp.down_proj.weight";
    rewrite_weights(&s, |t| {
        t.remove(name).expect("fixture has the tensor");
    });
    expect_error(&ocular(&["info", "--model", s.path()]), 1, &[name, "cannot find"]);
}

#[test]
fn wrongly_shaped_tensor_names_both_shapes() {
    let s = Scratch::copy_of("one_image", "bad-shape");
    let name = "multi_modal_projector.linear_1.weight";
    let mut shapes = (vec![], vec![]);
    rewrite_weights(&s, |t| {
        let w = t[name].clone();
        shapes.0 = w.dims().to_vec();
        let w = w.t().unwrap().contiguous().unwrap();
        shapes.1 = w.dims().to_vec();
        t.insert(name.to_string(), w);
    });
    let expected = format!("{:?}", shapes.0);
    let found = format!("{:?}", shapes.1);
    expect_error(&ocular(&["info", "--model", s.path()]), 1, &[name, &expected, &found]);
}

#[test]
fn truncated_weights_are_reported() {
    let s = Scratch::copy_of("one_image", "truncated");
    let path = s.0.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(&ocular(&["info", "--model", s.path()]), 1, &["model.safetensors", "truncated or corrupt"]);
}

#[test]
fn bad_images_are_reported_before_loading_the_model() {
    let s = Scratch::empty("images");
    let model = fixture("one_image").join("model");
    let model = model.to_str().unwrap();
    let cases: [(&str, &[u8], &[&str]); 3] = [
        ("empty.png", b"", &["empty.png", "empty"]),
        ("garbage.png", b"\x89PNG\r\n\x1a\nthis is not really a png", &["garbage.png"]),
        ("notes.png", b"just some text, not an image at all", &["notes.png", "not a recognised image format"]),
    ];
    for (name, bytes, needles) in cases {
        let p = s.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        expect_error(&ocular(&["run", "--model", model, "--image", p.to_str().unwrap(), "hi"]), 1, needles);
    }
    let img = fixture("one_image").join("img0.png");
    expect_error(
        &ocular(&["run", "--model", model, "--max-image-pixels", "100", "--image", img.to_str().unwrap(), "hi"]),
        1,
        &["img0.png", "over the limit of 100"],
    );
    expect_error(&ocular(&["run", "--model", model, "--image", "/nonexistent.png", "hi"]), 1, &["/nonexistent.png"]);
}

#[test]
fn placeholder_count_must_match_the_images() {
    let dir = fixture("one_image");
    let (model, img) = (dir.join("model"), dir.join("img0.png"));
    let out = ocular(&[
        "logits",
        "--quiet",
        "--raw",
        "--model",
        model.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--prompt",
        "<image><image> two?",
    ]);
    expect_error(&out, 1, &["2 <image> placeholder(s) but 1 image(s)"]);
    let out =
        ocular(&["logits", "--quiet", "--raw", "--model", model.to_str().unwrap(), "--prompt", "<image> none given"]);
    expect_error(&out, 1, &["1 <image> placeholder(s) but 0 image(s)"]);
}

#[test]
fn half_precision_runs_and_bf16_on_cpu_is_refused_clearly() {
    let dir = fixture("one_image");
    let (model, img) = (dir.join("model"), dir.join("img0.png"));
    let (model, img) = (model.to_str().unwrap(), img.to_str().unwrap());
    let out = ocular(&[
        "run",
        "-q",
        "--dtype",
        "f16",
        "--greedy",
        "--max-new-tokens",
        "4",
        "--model",
        model,
        "--image",
        img,
        "hi",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).trim().is_empty());
    expect_error(
        &ocular(&["run", "--dtype", "bf16", "--model", model, "--image", img, "hi"]),
        1,
        &["bf16", "f32 or f16"],
    );
    expect_error(&ocular(&["run", "--dtype", "f8", "--model", model, "hi"]), 2, &["f8"]);
}

#[test]
fn chat_keeps_the_conversation_and_survives_a_bad_image() {
    let dir = fixture("one_image");
    let meta = case_json("one_image");
    let (system, question) = (text_of(&meta["chat_messages"][0]), text_of(&meta["chat_messages"][1]));
    let input =
        format!("/image /nonexistent.png\n/image {}\n{question}\nAnd then?\n/exit\n", dir.join("img0.png").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocular"))
        .args([
            "chat",
            "-q",
            "--greedy",
            "--max-new-tokens",
            "16",
            "--system",
            &system,
            "--model",
            dir.join("model").to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent.png: no such file"), "{}", stderr(&out));
    // The first answer is transformers' answer to the same first turn; a second answer follows.
    let answers = stdout(&out);
    let first = format!("{}\n", meta["chat_greedy_text"].as_str().unwrap());
    assert!(answers.starts_with(&first), "{answers:?}");
    assert!(answers.len() > first.len(), "second turn answered");
}
