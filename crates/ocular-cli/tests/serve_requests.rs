//! `ocular serve` over real HTTP, continued: request fields that steer sampling, decode steps
//! shared by concurrent generations, shutdown on SIGINT, Ollama's streamed `/api/generate`,
//! remote media limits, and boxes from the built-in model.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{data_url, expected, openai_request, read_json, send, sse_events, Server};
use serde_json::{json, Value};

fn content(answer: &Value) -> &str {
    answer["choices"][0]["message"]["content"].as_str().unwrap_or_else(|| panic!("no content: {answer}"))
}

#[test]
fn max_completion_tokens_stop_top_p_and_seed_steer_the_generation() {
    let server = Server::start("hub_layout", &[]);
    let full = expected("hub_layout");
    let ask = |extra: Value| {
        let mut request = openai_request("hub_layout");
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        let (code, answer) = server.post("/v1/chat/completions", &request);
        assert_eq!(code, 200, "{extra}: {answer}");
        answer
    };

    let answer = ask(json!({"max_tokens": null, "max_completion_tokens": 3}));
    assert_eq!(answer["usage"]["completion_tokens"], 3);
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert!(full.starts_with(content(&answer)), "{answer}");

    // The answer ends just before the first stop string found, whichever of the list it is.
    let answer = ask(json!({"stop": ["not in it", "image1"]}));
    assert_eq!(content(&answer), full.split("image1").next().unwrap());
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let answer = ask(json!({"stop": "ra do"}));
    assert_eq!(content(&answer), full.split("ra do").next().unwrap());

    // Sampling with a tiny top_p keeps only the likeliest token: the greedy answer again.
    assert_eq!(content(&ask(json!({"temperature": 1.0, "top_p": 1e-6, "seed": 3}))), full);

    // A seed repeats a sampled answer; another seed, or none, samples another.
    let sampled = |seed: Value| content(&ask(json!({"temperature": 1.5, "seed": seed}))).to_string();
    let seven = sampled(json!(7));
    assert_eq!(sampled(json!(7)), seven);
    assert_ne!(sampled(json!(8)), seven);
    let unseeded = [sampled(Value::Null), sampled(Value::Null)];
    assert_ne!(unseeded[0], unseeded[1], "requests without a seed all sampled the same answer");
    assert!(unseeded.iter().all(|a| *a != full), "{unseeded:?}");
}

/// Reads one non-empty line of a streamed body.
fn next_line(reader: &mut impl BufRead) -> String {
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        if !line.trim().is_empty() {
            return line;
        }
    }
}

#[test]
fn concurrent_generations_advance_in_shared_decode_steps() {
    let server = Server::start("hub_layout", &["--max-batch", "4", "--max-tokens", "100000"]);
    let long = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000, "stream": true});
    let url = format!("{}/v1/chat/completions", server.url);
    let mut a = BufReader::new(send(&url, &long).unwrap().into_reader());
    next_line(&mut a);
    let mut b = BufReader::new(send(&url, &long).unwrap().into_reader());
    next_line(&mut b);
    // Both are running at once: each keeps streaming while the other is unfinished.
    for _ in 0..5 {
        assert!(next_line(&mut a).starts_with("data: {"));
        assert!(next_line(&mut b).starts_with("data: {"));
    }
    assert_eq!(server.metric("ocular_active_generations"), 2.0);
    assert_eq!(server.metric("ocular_decode_batch_max"), 2.0, "the two never shared a decode step");
    let steps = server.metric("ocular_decode_steps_total");
    let tokens = server.metric("ocular_generated_tokens_total");
    assert!(tokens > steps, "{tokens} tokens in {steps} steps: no step advanced both");
    drop((a, b));
    // A finished generation reports its decode speed.
    let (code, answer) =
        server.post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}));
    assert_eq!(code, 200, "{answer}");
    assert!(server.metric("ocular_decode_tokens_per_second") > 0.0);
}

#[test]
fn a_client_that_leaves_a_plain_request_cancels_its_generation() {
    let server = Server::start("hub_layout", &["--max-tokens", "100000"]);
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}).to_string();
    let address = server.url.strip_prefix("http://").unwrap();
    let mut client = std::net::TcpStream::connect(address).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).unwrap();
    client.write_all(body.as_bytes()).unwrap();
    server.wait_for("the generation never started", |s| s.metric("ocular_active_generations") >= 1.0);
    drop(client);
    server.wait_for("the generation went on after its client left", |s| {
        s.metric("ocular_cancelled_total") >= 1.0 && s.metric("ocular_active_generations") == 0.0
    });
}

#[test]
fn sigint_cancels_what_outlives_the_grace_period_and_exits_cleanly() {
    let mut server = Server::start("hub_layout", &["--shutdown-grace", "0", "--max-tokens", "100000"]);
    let long = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000, "stream": true});
    let mut reader = BufReader::new(send(&format!("{}/v1/chat/completions", server.url), &long).unwrap().into_reader());
    next_line(&mut reader);
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let lines: Vec<String> = rest.lines().filter(|l| !l.is_empty()).map(String::from).collect();
    let events = sse_events(&lines);
    let last = events.last().unwrap();
    assert_eq!(last["error"]["code"], "shutting_down", "{rest}");
    assert!(server.child.wait().unwrap().success());
    let said: Vec<String> = server.stderr.lock().unwrap().iter().collect();
    assert!(said.iter().any(|l| l == "stopped"), "{said:?}");
}

#[test]
fn ollama_generate_streams_ndjson_and_ollama_routes_answer_ollama_errors() {
    let server = Server::start("hub_layout", &[]);
    let image = data_url(&common::fixture("qwen2_vl", "hub_layout").join("img0.png"));
    let image = image.split_once(',').unwrap().1;
    let generate = json!({
        "model": "model", "prompt": "What is shown in this image?", "images": [image],
        "options": {"temperature": 0, "num_predict": 16},
    });
    let lines = server.stream("/api/generate", &generate);
    let chunks: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(chunks.len() > 2, "not streamed: {lines:?}");
    let text: String = chunks.iter().filter_map(|c| c["response"].as_str()).collect();
    assert_eq!(text, expected("hub_layout"));
    let last = chunks.last().unwrap();
    assert_eq!((last["done"].as_bool(), last["eval_count"].as_u64()), (Some(true), Some(16)));
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["done"] == false));

    // Ollama's routes answer {"error": "..."}; OpenAI's an error object.
    let (code, err) = server.post_raw("/api/generate", b"{\"prompt\": ");
    assert_eq!(code, 400);
    assert!(err["error"].is_string(), "{err}");
    let wrong_method = |path: &str| read_json(ureq::get(&format!("{}{path}", server.url)).call());
    let (code, err) = wrong_method("/api/chat");
    assert_eq!(code, 405);
    assert!(err["error"].as_str().unwrap().contains("GET /api/chat"), "{err}");
    let (code, err) = wrong_method("/v1/chat/completions");
    assert_eq!(code, 405);
    assert_eq!(err["error"]["code"], "method_not_allowed", "{err}");
}

/// A one-route HTTP server on 127.0.0.1 that answers every request with `respond`.
fn http_server(respond: impl Fn(&mut std::net::TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x.png", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.read(&mut [0u8; 2048]);
            respond(&mut stream);
        }
    });
    url
}

#[test]
fn remote_media_over_the_size_or_time_limit_is_refused() {
    // Says it is large; sends it without a length; never answers.
    let declared = http_server(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 5000000\r\n\r\n");
    });
    let undeclared = http_server(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\nconnection: close\r\n\r\n");
        let _ = s.write_all(&vec![0u8; 400_000]);
    });
    let silent = http_server(|s| {
        std::thread::sleep(Duration::from_secs(30));
        let _ = s.flush();
    });
    let server = Server::start("hub_layout", &["--allow-remote", "--max-body", "300000", "--fetch-timeout", "1"]);
    let with_image = |url: &str| {
        json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}]}], "max_tokens": 1})
    };
    for url in [&declared, &undeclared] {
        let (code, err) = server.post("/v1/chat/completions", &with_image(url));
        assert_eq!(code, 413, "{url}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("300000 bytes"), "{err}");
    }
    let started = Instant::now();
    let (code, err) = server.post("/v1/chat/completions", &with_image(&silent));
    assert_eq!(code, 400, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains(&silent) && message.contains("timed out"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10), "the fetch took {:?}", started.elapsed());
    // file:// URLs are off without --allow-files.
    let file = format!("file://{}", common::fixture("qwen2_vl", "hub_layout").join("img0.png").display());
    let (code, err) = server.post("/v1/chat/completions", &with_image(&file));
    assert_eq!(code, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("--allow-files"), "{err}");
    let bad = common::ocular(&["serve", "--fetch-timeout", "0"]);
    common::expect_error(&bad, 1, &["--fetch-timeout"]);
}

#[test]
fn the_built_in_model_s_boxes_come_back_in_the_message_as_ocular_ground_finds_them() {
    let server = Server::start_args(&[]);
    let scene = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scene.png");
    let request = json!({
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(&scene)}},
            {"type": "text", "text": "Locate the blue square."}]}],
        "temperature": 0, "max_tokens": 128,
    });
    let (code, answer) = server.post("/v1/chat/completions", &request);
    assert_eq!(code, 200, "{answer}");
    let boxes = answer["choices"][0]["message"]["boxes"].as_array().unwrap_or_else(|| panic!("no boxes: {answer}"));
    let ground = common::ocular(&["ground", "--image", scene.to_str().unwrap(), "the blue square"]);
    assert!(ground.status.success(), "{}", common::stderr(&ground));
    let found: Value = serde_json::from_str(&common::stdout(&ground)).unwrap();
    assert_eq!(boxes.len(), 1, "{answer}");
    assert_eq!(boxes[0]["label"], found[0]["label"]);
    assert_eq!(boxes[0]["box"], found[0]["box"], "{answer} against {found}");
    assert_eq!(boxes[0]["image"], 0);
    // Streamed, they come with the finish_reason.
    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let events = sse_events(&server.stream("/v1/chat/completions", &streaming));
    let finish = events.iter().find(|e| !e["choices"][0]["finish_reason"].is_null()).unwrap();
    assert_eq!(finish["choices"][0]["delta"]["boxes"], json!(boxes), "{finish}");
}
