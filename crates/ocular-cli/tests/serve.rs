//! `ocular serve` over real HTTP: a server on 127.0.0.1 with a free port, driven with a real
//! client. Answers are checked against transformers' greedy answers for the fixture models.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Command;

use base64::Engine as _;
use common::server::{data_url, expected, openai_request, read_json, send, sse_events, Server};
use common::{fixture, scratch};
use serde_json::{json, Value};

#[test]
fn openai_chat_plain_and_streaming_match_transformers() {
    let server = Server::start("hub_layout", &[]);
    let (code, models) = {
        let (c, t) = server.get("/v1/models");
        (c, serde_json::from_str::<Value>(&t).unwrap())
    };
    assert_eq!((code, models["data"][0]["id"].as_str()), (200, Some("model")));
    assert_eq!(server.get("/health"), (200, r#"{"status":"ok"}"#.to_string()));

    let request = openai_request("hub_layout");
    let (code, answer) = server.post("/v1/chat/completions", &request);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], expected("hub_layout"));
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 16);
    let prompt_tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 10);

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let events = sse_events(&server.stream("/v1/chat/completions", &streaming));
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, expected("hub_layout"));
    let finish = events.iter().find(|e| !e["choices"][0]["finish_reason"].is_null()).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage = events.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"].as_u64(), Some(prompt_tokens));
    assert_eq!(usage["usage"]["total_tokens"].as_u64(), Some(prompt_tokens + 16));

    assert!(server.metric("ocular_requests_total{route=\"/v1/chat/completions\"}") >= 2.0);
    assert!(server.metric("ocular_time_to_first_token_seconds_count") >= 2.0);
    assert!(server.metric("ocular_image_encode_seconds_count") >= 2.0);
    assert!(server.metric("ocular_generated_tokens_total") >= 32.0);
}

#[test]
fn concurrent_requests_progress_together_and_each_gets_its_own_answer() {
    let server = std::sync::Arc::new(Server::start("hub_layout", &["--max-batch", "4"]));
    let cases = ["hub_layout", "hub_layout", "hub_layout", "hub_layout"];
    let threads: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let server = server.clone();
            let mut request = openai_request(case);
            // Different limits, so the four finish at different ticks.
            request["max_tokens"] = json!(4 + 4 * i);
            request["stream"] = json!(true);
            std::thread::spawn(move || {
                let events = sse_events(&server.stream("/v1/chat/completions", &request));
                events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect::<String>()
            })
        })
        .collect();
    let full = expected("hub_layout");
    for (i, t) in threads.into_iter().enumerate() {
        let text = t.join().unwrap();
        assert!(full.starts_with(&text) && !text.is_empty(), "request {i}: {text:?} is not a prefix of {full:?}");
    }
}

#[test]
fn ollama_chat_and_generate_answer_like_openai() {
    let server = Server::start("hub_layout", &[]);
    let image = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(fixture("qwen2_vl", "hub_layout").join("img0.png")).unwrap());
    let chat = json!({
        "model": "model",
        "messages": [{"role": "user", "content": "What is shown in this image?", "images": [image]}],
        "options": {"temperature": 0, "num_predict": 16},
    });
    let lines = server.stream("/api/chat", &chat);
    let chunks: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["message"]["content"].as_str()).collect();
    assert_eq!(text, expected("hub_layout"));
    let last = chunks.last().unwrap();
    assert_eq!((last["done"].as_bool(), last["done_reason"].as_str()), (Some(true), Some("length")));
    assert_eq!(last["eval_count"], 16);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["done"] == false));

    let generate = json!({
        "model": "model:latest", "prompt": "What is shown in this image?", "images": [image], "stream": false,
        "options": {"temperature": 0, "num_predict": 16},
    });
    let (code, answer) = server.post("/api/generate", &generate);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["response"], expected("hub_layout"));
    assert_eq!(answer["done"], true);

    let (code, tags) = {
        let (c, t) = server.get("/api/tags");
        (c, serde_json::from_str::<Value>(&t).unwrap())
    };
    assert_eq!((code, tags["models"][0]["name"].as_str()), (200, Some("model")));
    let (code, err) = server.post("/api/chat", &json!({"model": "llava", "messages": []}));
    assert_eq!(code, 404);
    assert!(err["error"].as_str().unwrap().contains("llava"), "{err}");
}

/// Each bad request gets its status and an OpenAI error object naming the problem.
#[test]
fn bad_requests_get_clear_errors_and_the_server_survives() {
    let dir = scratch("serve-files");
    let image = fixture("qwen2_vl", "hub_layout").join("img0.png");
    let server = Server::start(
        "hub_layout",
        &[
            "--max-images",
            "2",
            "--max-body",
            "300000",
            "--max-image-pixels",
            "5000",
            "--allow-files",
            dir.to_str().unwrap(),
        ],
    );
    let with_parts = |parts: Value| json!({"messages": [{"role": "user", "content": parts}], "max_tokens": 2});
    let img = |url: &str| json!({"type": "image_url", "image_url": {"url": url}});
    let text = json!({"type": "text", "text": "hi"});
    let small_png = {
        let mut bytes = Vec::new();
        image::RgbImage::new(40, 30).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    let outside = scratch("serve-outside").join("x.png");
    std::fs::copy(&image, &outside).unwrap();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"messages\": [".to_vec(), 400, "not valid JSON"),
        ("wrong type", br#"{"messages": "hi"}"#.to_vec(), 400, "does not match the schema"),
        ("empty messages", br#"{"messages": []}"#.to_vec(), 400, "messages is empty"),
        ("unknown part", with_parts(json!([{"type": "input_audio"}])).to_string().into_bytes(), 400, "input_audio"),
        (
            "not an image",
            with_parts(json!([img("data:image/png;base64,aGVsbG8="), text])).to_string().into_bytes(),
            400,
            "messages[0].content[0]",
        ),
        (
            "bad base64",
            with_parts(json!([img("data:image/png;base64,%%%"), text])).to_string().into_bytes(),
            400,
            "base64",
        ),
        (
            "too many images",
            with_parts(json!([img(&small_png), img(&small_png), img(&small_png), text])).to_string().into_bytes(),
            413,
            "at most 2",
        ),
        (
            "image over the pixel limit",
            with_parts(json!([img(&data_url(&image)), text])).to_string().into_bytes(),
            413,
            "pixels",
        ),
        (
            "remote off",
            with_parts(json!([img("http://127.0.0.1:1/x.png"), text])).to_string().into_bytes(),
            400,
            "--allow-remote",
        ),
        (
            "file outside",
            with_parts(json!([img(&format!("file://{}", outside.display())), text])).to_string().into_bytes(),
            400,
            "outside",
        ),
        (
            "unknown model",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string().into_bytes(),
            404,
            "gpt-4o",
        ),
        ("bad role", json!({"messages": [{"role": "tool", "content": "hi"}]}).to_string().into_bytes(), 400, "tool"),
        (
            "bad temperature",
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}).to_string().into_bytes(),
            400,
            "temperature",
        ),
        ("body too large", vec![b' '; 300_001], 413, "--max-body"),
    ];
    for (what, body, status, needle) in cases {
        let (code, err) = server.post_raw("/v1/chat/completions", &body);
        assert_eq!(code, status, "{what}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_else(|| panic!("{what}: no error object: {err}"));
        let shown = format!("{message} {}", err["error"]["param"]);
        assert!(shown.contains(needle), "{what}: {shown:?} should mention {needle:?}");
        assert!(!message.contains('\n'), "{what}: one line: {message:?}");
    }
    let (code, err) = {
        let (c, t) = server.get("/v1/nothing");
        (c, serde_json::from_str::<Value>(&t).unwrap())
    };
    assert_eq!(code, 404);
    assert!(err["error"]["message"].as_str().unwrap().contains("/v1/nothing"));

    // Still serving: a small image inside the allowed folder works, its name %-escaped or not.
    image::RgbImage::new(40, 30).save(dir.join("small image.png")).unwrap();
    for name in ["small image.png", "small%20image.png"] {
        let url = format!("file://{}/{name}", dir.display());
        let (code, ok) = server.post("/v1/chat/completions", &with_parts(json!([img(&url), text])));
        assert_eq!(code, 200, "{url}: {ok}");
    }
    let (code, ok) = server.post("/v1/chat/completions", &with_parts(json!([img(&small_png), text])));
    assert_eq!(code, 200, "{ok}");
    assert_eq!(ok["usage"]["completion_tokens"], 2);
    assert!(server.metric("ocular_errors_total{status=\"400\"}") >= 8.0);
}

#[test]
fn a_full_queue_answers_503_and_a_client_that_leaves_cancels_its_generation() {
    let server = Server::start("hub_layout", &["--max-batch", "1", "--queue", "1", "--max-tokens", "100000"]);
    let long = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000, "stream": true});
    // The first takes the only slot and keeps it; read a little of it, then hold the stream.
    let first = send(&format!("{}/v1/chat/completions", server.url), &long).unwrap();
    let mut reader = BufReader::new(first.into_reader());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("data: "), "{line}");
    // The second waits in the queue (its response only starts once it runs).
    let url = server.url.clone();
    let queued = std::thread::spawn(move || {
        let short = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3});
        read_json(send(&format!("{url}/v1/chat/completions"), &short))
    });
    server.wait_for("the second request never queued", |s| s.metric("ocular_queue_depth") >= 1.0);
    // The third finds the queue full.
    let r =
        send(&format!("{}/v1/chat/completions", server.url), &json!({"messages": [{"role": "user", "content": "hi"}]}));
    match r {
        Err(ureq::Error::Status(503, resp)) => {
            assert_eq!(resp.header("retry-after"), Some("1"));
            let body: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "queue_full");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // Leaving cancels the first; the queued one then runs to its end.
    drop(reader);
    let (code, answer) = queued.join().unwrap();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], 3);
    assert!(server.metric("ocular_cancelled_total") >= 1.0);
}

#[test]
fn sigterm_lets_a_running_generation_finish_then_exits_cleanly() {
    let mut server = Server::start("hub_layout", &[]);
    let mut request = openai_request("hub_layout");
    request["stream"] = json!(true);
    let r = send(&format!("{}/v1/chat/completions", server.url), &request).unwrap();
    let mut reader = BufReader::new(r.into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    // Finished, not cancelled: the whole answer, then [DONE].
    let lines: Vec<String> = first.lines().chain(rest.lines()).filter(|l| !l.is_empty()).map(String::from).collect();
    let text: String = sse_events(&lines).iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, expected("hub_layout"), "{rest}");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The reader thread ends when the pipe closes, so this collects every line the server wrote.
    let said: Vec<String> = server.stderr.lock().unwrap().iter().collect();
    assert!(said.iter().any(|l| l == "stopped"), "{said:?}");
}

#[test]
fn the_chat_page_is_served() {
    let server = Server::start("hub_layout", &[]);
    let (code, page) = server.get("/");
    assert_eq!(code, 200);
    for id in ["image-input", "prompt", "send", "messages", "overlay"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "the page lacks #{id}");
    }
}

fn gif_data_url(frames: usize) -> String {
    let mut bytes = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut bytes);
        for i in 0..frames {
            let rgba = image::RgbaImage::from_fn(56, 56, |x, y| {
                image::Rgba([(x * 4) as u8, (y * 4) as u8, (i * 60) as u8, 255])
            });
            encoder.encode_frame(image::Frame::new(rgba)).unwrap();
        }
    }
    format!("data:image/gif;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[test]
fn video_urls_reach_models_that_take_video() {
    let server = Server::start("video", &[]);
    let request = json!({
        "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": gif_data_url(4)}},
            {"type": "text", "text": "Describe this video."}]}],
        "temperature": 0, "max_tokens": 3,
    });
    let (code, answer) = server.post("/v1/chat/completions", &request);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], 3);
    // The video's tokens are in the prompt (beyond <|vision_start|> and <|vision_end|>).
    let (code, text_only) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Describe this video."}], "max_tokens": 1}),
    );
    assert_eq!(code, 200, "{text_only}");
    let extra =
        answer["usage"]["prompt_tokens"].as_u64().unwrap() - text_only["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(extra > 2, "no video tokens: {extra}");
    // A model without video support refuses it.
    let llava = Server::start_family("llava", "one_image", &[]);
    let (code, err) = llava.post("/v1/chat/completions", &request);
    assert_eq!(code, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("video"), "{err}");
}

#[test]
fn remote_images_are_fetched_only_when_allowed_and_slow_requests_time_out() {
    // A one-file HTTP server with a small PNG.
    let mut png = Vec::new();
    image::RgbImage::new(40, 30).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let image_url = format!("http://{}/x.png", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 2048];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                png.len()
            );
            let _ = std::io::Write::write_all(&mut stream, head.as_bytes());
            let _ = std::io::Write::write_all(&mut stream, &png);
        }
    });
    let server = Server::start("hub_layout", &["--allow-remote"]);
    let with_image = |max_tokens: u64| {
        json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": "hi"}]}],
            "max_tokens": max_tokens})
    };
    let (code, answer) = server.post("/v1/chat/completions", &with_image(2));
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], 2);
    // A request over --timeout gets 504 (with a zero timeout, every request is over).
    let strict = Server::start("hub_layout", &["--timeout", "0"]);
    let (code, err) = strict.post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(code, 504, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("timed out"), "{err}");
    let (code, _) = server.post("/v1/chat/completions", &with_image(1));
    assert_eq!(code, 200);
}
