//! The built-in model (compiled into `ocular`, used when no --model is given): it answers as
//! transformers does with the same folder, it scores what the README says on fresh scenes, and
//! the README's first commands work.

mod common;

use std::path::{Path, PathBuf};

use common::{ocular, scratch, stderr, stdout};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// SHA-256 of a file, hex (FIPS 180-4; small enough to keep here rather than add a crate).
fn sha256_hex(bytes: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut data = bytes.to_vec();
    let bits = (bytes.len() as u64).wrapping_mul(8);
    data.push(0x80);
    while data.len() % 64 != 56 {
        data.push(0);
    }
    data.extend_from_slice(&bits.to_be_bytes());
    for block in data.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([block[4 * i], block[4 * i + 1], block[4 * i + 2], block[4 * i + 3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7].wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [t1.wrapping_add(t2), v[0], v[1], v[2], v[3].wrapping_add(t1), v[4], v[5], v[6]];
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[test]
fn sha256_of_known_strings() {
    assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/// transformers' greedy answers (scripts/fixtures/builtin.py) for the shipped weights.
#[test]
fn the_builtin_model_answers_as_transformers_does() {
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("tests/fixtures/builtin/answers.json")).unwrap()).unwrap();
    let weights = std::fs::read(repo("models/builtin/model.safetensors")).unwrap();
    assert_eq!(
        fixture["weights_sha256"].as_str().unwrap(),
        sha256_hex(&weights),
        "models/builtin changed since tests/fixtures/builtin/answers.json was written: run scripts/make_fixtures.sh builtin"
    );
    let max = fixture["max_new_tokens"].to_string();
    for case in fixture["answers"].as_array().unwrap() {
        let mut args = vec!["run".to_string(), "-q".into(), "--greedy".into(), "--max-new-tokens".into(), max.clone()];
        for image in case["images"].as_array().unwrap() {
            args.push("--image".into());
            args.push(repo(image.as_str().unwrap()).display().to_string());
        }
        args.push(case["question"].as_str().unwrap().into());
        let out = ocular(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim_end_matches('\n'), case["text"].as_str().unwrap(), "{}", case["question"]);
    }
}

/// The README's grounding command: a box for the blue square, drawn.
#[test]
fn ground_finds_and_draws_the_blue_square() {
    let dir = scratch("builtin-ground");
    let drawn = dir.join("out.png");
    let out = ocular(&[
        "ground",
        "-q",
        "--image",
        repo("examples/scene.png").to_str().unwrap(),
        "the blue square",
        "--draw",
        drawn.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let boxes = json.as_array().unwrap();
    assert!(!boxes.is_empty(), "no box: {json}");
    let image = image::open(&drawn).unwrap();
    assert_eq!((image.width(), image.height()), image::image_dimensions(repo("examples/scene.png")).unwrap());
}

/// CI's check of the shipped model on 200 fresh scenes (a seed no training step uses). The
/// floors sit a little under what the shipped model scores (README: "The built-in model"),
/// so a broken loader, preprocessor or template shows; they are far below the targets
/// because the shipped model does not reach them yet. About 28 questions a task make a
/// standard error of ~9 points, so each floor sits under this seed's own score (caption 0.45,
/// attribute 0.93, count 0.66, relation 0.48, multi-image 0.68, video 0.96, grounding 3 boxes
/// of 28 at IoU 0.5; on 1000 scenes attribute is 0.70). Few boxes reach IoU 0.5 yet, so
/// grounding is checked mostly by its mean IoU and for well-formed boxes.
#[test]
fn the_builtin_model_scores_on_200_fresh_scenes() {
    let predictions = scratch("builtin-eval").join("predictions.jsonl");
    let out = ocular(&[
        "eval",
        "-q",
        "--suite",
        "scenes",
        "--n",
        "200",
        "--seed",
        "2026",
        "--json",
        "--predictions",
        predictions.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let tasks = &report["tasks"];
    let n: u64 = tasks.as_object().unwrap().values().map(|t| t["n"].as_u64().unwrap()).sum();
    assert_eq!(n, 200);
    for (task, floor) in [
        ("caption", 0.35),
        ("attribute", 0.7),
        ("count", 0.55),
        ("relation", 0.35),
        ("multi_image", 0.5),
        ("video", 0.85),
        ("grounding", 0.03),
    ] {
        let accuracy = tasks[task]["accuracy"].as_f64().unwrap();
        assert!(accuracy >= floor, "{task}: accuracy {accuracy} under the floor {floor}");
    }
    // Its boxes overlap the true ones (mean IoU 0.22 on these scenes; 0.01-0.03 before the
    // pointer loss taught its answers to look at the object).
    let mean_iou = report["grounding"]["mean_iou"].as_f64().unwrap();
    assert!(mean_iou >= 0.15, "grounding mean IoU {mean_iou} under the floor 0.15");
    let text = std::fs::read_to_string(&predictions).unwrap();
    let answers: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let boxes: Vec<&str> =
        answers.iter().filter(|a| a["task"] == "grounding").map(|a| a["answer"].as_str().unwrap()).collect();
    assert_eq!(boxes.len() as u64, tasks["grounding"]["n"].as_u64().unwrap());
    for answer in boxes {
        assert!(is_box_answer(answer), "not a box: {answer}");
    }
    assert!(report["grounding"]["mean_iou"].as_f64().unwrap() >= 0.0, "{report}");
}

/// One labelled box on the 0-1000 grid, read by the parser `ocular ground` and the server use.
fn is_box_answer(answer: &str) -> bool {
    let read = ocular::ground::parse(answer, ocular::ground::Coords::Grid1000, (1000, 1000));
    read.problems.is_empty() && read.boxes.len() == 1 && read.boxes[0].label.is_some()
}
