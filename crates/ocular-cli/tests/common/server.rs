//! `ocular serve` for the tests: a server on 127.0.0.1 with a free port, driven over real HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use super::{case_json, fixture};

pub struct Server {
    pub child: Child,
    pub url: String,
    pub stderr: std::sync::Mutex<mpsc::Receiver<String>>,
}

impl Server {
    pub fn start(case: &str, extra: &[&str]) -> Server {
        Self::start_family("qwen2_vl", case, extra)
    }

    pub fn start_family(family: &str, case: &str, extra: &[&str]) -> Server {
        let model = fixture(family, case).join("model");
        Self::start_args(&[&["--model", model.to_str().unwrap()], extra].concat())
    }

    /// `ocular serve -q --port 0` with `args` (no `--model`: the built-in model).
    pub fn start_args(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ocular"))
            .args(["serve", "-q", "--port", "0"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ocular serve");
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let url = loop {
            let line = stderr.recv_timeout(Duration::from_secs(60)).expect("the server did not start");
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_string();
            }
        };
        Server { child, url, stderr: std::sync::Mutex::new(stderr) }
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string().as_bytes())
    }

    pub fn post_raw(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let r = ureq::post(&format!("{}{path}", self.url)).set("content-type", "application/json").send_bytes(body);
        read_json(r)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&format!("{}{path}", self.url)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// A streaming request's body lines, read to the end.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let r = send(&format!("{}{path}", self.url), body).expect("streaming request");
        BufReader::new(r.into_reader()).lines().map(Result::unwrap).filter(|l| !l.is_empty()).collect()
    }

    /// Polls until `done` holds, failing with `what` after 20 seconds.
    pub fn wait_for(&self, what: &str, done: impl Fn(&Server) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn send(url: &str, body: &Value) -> Result<ureq::Response, ureq::Error> {
    ureq::post(url).set("content-type", "application/json").send_string(&body.to_string())
}

pub fn read_json(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let (code, r) = match r {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(code, r)) => (code, r),
        Err(e) => panic!("request failed: {e}"),
    };
    let text = r.into_string().unwrap();
    (code, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
}

pub fn data_url(path: &std::path::Path) -> String {
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap()))
}

/// The fixture's one-turn chat as an OpenAI request, greedy, as many tokens as transformers made.
pub fn openai_request(case: &str) -> Value {
    let meta = case_json("qwen2_vl", case);
    let image = data_url(&fixture("qwen2_vl", case).join("img0.png"));
    let parts: Vec<Value> = meta["chat_messages"][0]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| match p["type"].as_str().unwrap() {
            "image" => json!({"type": "image_url", "image_url": {"url": image}}),
            _ => json!({"type": "text", "text": p["text"]}),
        })
        .collect();
    json!({"messages": [{"role": "user", "content": parts}], "temperature": 0, "max_tokens": meta["max_new_tokens"]})
}

pub fn expected(case: &str) -> String {
    case_json("qwen2_vl", case)["chat_greedy_text"].as_str().unwrap().to_string()
}

/// SSE `data:` payloads up to `[DONE]`, which must come last.
pub fn sse_events(lines: &[String]) -> Vec<Value> {
    assert_eq!(lines.last().map(String::as_str), Some("data: [DONE]"), "{lines:?}");
    lines[..lines.len() - 1].iter().map(|l| serde_json::from_str(l.strip_prefix("data: ").unwrap()).unwrap()).collect()
}
