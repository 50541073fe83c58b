//! What the CLI tests share: running the binary, finding fixtures, checking one-line errors.
#![allow(dead_code)] // each test file uses its own subset

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `tests/fixtures/FAMILY/CASE` at the repository root.
pub fn fixture(family: &str, case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(family).join(case)
}

pub fn case_json(family: &str, case: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(family, case).join("case.json")).unwrap()).unwrap()
}

pub fn ocular(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ocular")).args(args).output().expect("run ocular")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with the binary's own words unless it exited with `code`, without a panic, and with an
/// `error:` line (clap adds a usage hint after its own) that mentions every needle.
pub fn expect_error(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    for n in needles {
        assert!(line.contains(n), "error line {line:?} should mention {n:?}");
    }
}

/// A fresh, empty scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ocular-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The text part of a fixture's chat message.
pub fn text_of(message: &serde_json::Value) -> String {
    let parts = message["content"].as_array().unwrap();
    parts.iter().find(|p| p["type"] == "text").unwrap()["text"].as_str().unwrap().to_string()
}
