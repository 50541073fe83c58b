//! `ocular eval` on the tiny Qwen2-VL fixture (random weights, so the scores are near 0): the
//! JSON report's shape, the table, and the usage errors.

use serde_json::Value;

const TASKS: [&str; 7] = ["caption", "attribute", "count", "relation", "grounding", "multi_image", "video"];

mod common;

use common::ocular;

fn model() -> String {
    common::fixture("qwen2_vl", "image_upscaled").join("model").to_str().unwrap().to_string()
}

fn in_unit_interval(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x))
}

#[test]
fn json_report_has_every_task_and_the_grounding_scores() {
    let m = model();
    let out = ocular(&["eval", "--model", &m, "--suite", "scenes", "--n", "14", "--seed", "1", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {err}");
    assert!(err.contains("evaluating: 14/14"), "progress on stderr: {err}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    let tasks = report["tasks"].as_object().unwrap();
    assert_eq!(tasks.len(), 7, "{report}");
    for name in TASKS {
        let t = tasks[name].as_object().unwrap_or_else(|| panic!("task {name} missing: {report}"));
        assert_eq!(t.len(), 2, "{name}: {report}");
        assert_eq!(t["n"], 2, "{name}: {report}");
        assert!(in_unit_interval(&t["accuracy"]), "{name}: {report}");
    }
    let grounding = report["grounding"].as_object().unwrap();
    assert_eq!(grounding.len(), 2, "{report}");
    assert!(in_unit_interval(&grounding["acc_iou50"]) && in_unit_interval(&grounding["mean_iou"]), "{report}");
    assert_eq!(report.as_object().unwrap().len(), 2, "{report}");
}

#[test]
fn table_by_default_and_quiet_stderr() {
    let m = model();
    let out = ocular(&["eval", "-q", "--model", &m, "--n", "7", "--seed", "3"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "quiet: {}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("task"), "{table}");
    for name in TASKS {
        assert!(table.lines().any(|l| l.starts_with(name) && l.contains(" 1 ")), "{name}: {table}");
    }
    assert!(table.contains("acc@IoU>=0.5"), "{table}");
}

#[test]
fn too_few_examples_or_an_unknown_suite_are_usage_errors() {
    let m = model();
    let out = ocular(&["eval", "--model", &m, "--n", "6"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the scenes suite needs at least 7 examples (one per task), got 6"), "{err}");
    assert!(!err.contains("loading"), "refused before loading: {err}");
    let out = ocular(&["eval", "--model", &m, "--suite", "coco"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("invalid value 'coco'") && err.contains("scenes"), "{err}");
}

#[test]
fn predictions_file_has_every_answer_and_agrees_with_the_report() {
    let m = model();
    let dir = common::scratch("eval-predictions");
    let file = dir.join("answers.jsonl");
    let f = file.to_str().unwrap();
    let images = dir.join("images");
    let args = ["eval", "-q", "--model", &m, "--n", "14", "--seed", "1", "--json", "--predictions", f];
    let out = ocular(&[&args[..], &["--images", images.to_str().unwrap()]].concat());
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<Value> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 14);
    for name in TASKS {
        let mine: Vec<&Value> = lines.iter().filter(|l| l["task"] == name).collect();
        assert_eq!(mine.len(), 2, "{name}");
        for l in &mine {
            assert!(l["question"].as_str().is_some_and(|q| !q.is_empty()), "{l}");
            assert!(l["expected"].as_str().is_some_and(|a| !a.is_empty()), "{l}");
            assert!(l["answer"].is_string() && l["correct"].is_boolean(), "{l}");
            assert_eq!(l.get("iou").is_some(), name == "grounding", "{l}");
            // Each example's pictures are saved and listed: two images to compare, a clip's
            // 4 to 8 frames, one image otherwise.
            let saved: Vec<&str> = l["images"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
            match name {
                "multi_image" => assert_eq!(saved.len(), 2, "{l}"),
                "video" => assert!((4..=8).contains(&saved.len()) && saved[0].ends_with("-video-frame1.png"), "{l}"),
                _ => assert_eq!(saved.len(), 1, "{l}"),
            }
            for path in saved {
                let (w, h) = image::image_dimensions(path).unwrap();
                assert!(w >= 28 && h >= 28 && std::path::Path::new(path).starts_with(&images), "{path}: {w}x{h}");
            }
        }
        let right = mine.iter().filter(|l| l["correct"] == true).count() as f64;
        assert_eq!(report["tasks"][name]["accuracy"].as_f64().unwrap() * 2.0, right, "{name}");
    }
    let ious: f64 = lines.iter().filter_map(|l| l["iou"].as_f64()).sum();
    assert!((report["grounding"]["mean_iou"].as_f64().unwrap() * 2.0 - ious).abs() < 1e-9);
}

#[test]
fn an_unwritable_predictions_file_or_image_folder_is_named_before_loading() {
    let m = model();
    let out = ocular(&["eval", "--model", &m, "--n", "7", "--predictions", "/no/such/dir/answers.jsonl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write predictions to /no/such/dir/answers.jsonl"), "{err}");
    assert!(!err.contains("loading") && !err.contains("panicked"), "{err}");
    let out = ocular(&["eval", "--model", &m, "--n", "7", "--images", "/dev/null/images"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot create the image folder /dev/null/images"), "{err}");
    assert!(!err.contains("loading") && !err.contains("panicked"), "{err}");
}

#[test]
fn answers_do_not_depend_on_the_thread_count() {
    let m = model();
    let dir = common::scratch("eval-threads");
    let run = |threads: &str| {
        let file = dir.join(format!("answers-{threads}.jsonl"));
        let f = file.to_str().unwrap();
        let args = ["eval", "-q", "--model", &m, "--n", "14", "--seed", "5", "--json", "--threads", threads];
        let out = ocular(&[&args[..], &["--predictions", f]].concat());
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        (out.stdout, std::fs::read_to_string(&file).unwrap())
    };
    let (one, two) = (run("1"), run("2"));
    assert_eq!(one.1.lines().count(), 14);
    assert_eq!(one, two);
    let out = ocular(&["eval", "--model", &m, "--threads", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--threads") && err.contains("'0'"), "{err}");
}
