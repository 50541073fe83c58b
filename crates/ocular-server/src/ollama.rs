//! Ollama's API, so Ollama clients work unchanged: `POST /api/chat` and `POST /api/generate`
//! (images as base64 strings; streaming newline-delimited JSON unless `"stream": false`),
//! `GET /api/tags` and `GET /api/version`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ocular::generate::SamplingOverrides;
use ocular::pipeline::FinishReason;
use ocular::prompt::Part;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::{Event, Sampling, Summary};
use crate::error::ApiError;
use crate::jobs::{self, Conversation, MediaRef, Request, Source};
use crate::metrics::METRICS;
use crate::openai::parse_json;
use crate::SharedState;

#[derive(Deserialize, Default)]
struct Options {
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    seed: Option<u64>,
    num_predict: Option<i64>,
    repeat_penalty: Option<f32>,
    stop: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
    #[serde(default)]
    options: Options,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    images: Vec<String>,
}

#[derive(Deserialize)]
struct GenerateRequest {
    model: Option<String>,
    #[serde(default)]
    prompt: String,
    system: Option<String>,
    #[serde(default)]
    images: Vec<String>,
    stream: Option<bool>,
    #[serde(default)]
    options: Options,
}

pub async fn chat(State(state): State<SharedState>, body: Bytes) -> Result<Response, ApiError> {
    METRICS.request("/api/chat");
    let r: ChatRequest = parse_json(&body).map_err(ApiError::ollama)?;
    let mut conv = Conversation::default();
    for (i, m) in r.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "user" | "assistant" => m.role.as_str(),
            other => {
                return Err(ApiError::bad_request("invalid_role", format!("unsupported role {other:?}"))
                    .param(format!("messages[{i}].role"))
                    .ollama())
            }
        };
        let mut content = Vec::new();
        for (j, data) in m.images.iter().enumerate() {
            conv.media.push(MediaRef::Image(Source::Base64(data.clone()), format!("messages[{i}].images[{j}]")));
            content.push(Part::Image);
        }
        content.push(Part::Text { text: m.content.clone() });
        conv.messages.push(ocular::prompt::Message::new(role, content));
    }
    run(state, r.model, conv, r.options, r.stream, Kind::Chat).await
}

pub async fn generate(State(state): State<SharedState>, body: Bytes) -> Result<Response, ApiError> {
    METRICS.request("/api/generate");
    let r: GenerateRequest = parse_json(&body).map_err(ApiError::ollama)?;
    let mut conv = Conversation::default();
    if let Some(system) = &r.system {
        conv.push_text("system", system);
    }
    let mut content = Vec::new();
    for (j, data) in r.images.iter().enumerate() {
        conv.media.push(MediaRef::Image(Source::Base64(data.clone()), format!("images[{j}]")));
        content.push(Part::Image);
    }
    content.push(Part::Text { text: r.prompt.clone() });
    conv.messages.push(ocular::prompt::Message::new("user", content));
    run(state, r.model, conv, r.options, r.stream, Kind::Generate).await
}

#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Generate,
}

async fn run(
    state: SharedState,
    model: Option<String>,
    conversation: Conversation,
    o: Options,
    stream: Option<bool>,
    kind: Kind,
) -> Result<Response, ApiError> {
    state.check_model(model.as_deref()).map_err(ApiError::ollama)?;
    let started = Instant::now();
    let request = Request {
        conversation,
        sampling: Sampling {
            overrides: SamplingOverrides {
                temperature: o.temperature,
                top_p: o.top_p,
                top_k: o.top_k,
                repetition_penalty: o.repeat_penalty,
                ..Default::default()
            },
            seed: o.seed,
        },
        // Ollama: a negative num_predict means no limit (the context decides).
        max_tokens: o.num_predict.filter(|n| *n >= 0).map(|n| n as usize),
        stop: o.stop.unwrap_or_default(),
    };
    let mut rx = jobs::submit(&state, request).await.map_err(ApiError::ollama)?;
    let model = state.model_id.clone();
    let piece = move |text: &str, done: Option<(&Summary, &str)>| -> Value {
        let mut v = json!({ "model": model, "created_at": rfc3339_now(), "done": done.is_some() });
        match kind {
            Kind::Chat => v["message"] = json!({ "role": "assistant", "content": text }),
            Kind::Generate => v["response"] = json!(text),
        }
        if let Some((s, _)) = done {
            let total = jobs::secs_to_nanos(started.elapsed().as_secs_f64());
            v["done_reason"] = json!(match s.finish_reason {
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
            });
            v["total_duration"] = json!(total);
            v["load_duration"] = json!(0);
            v["prompt_eval_count"] = json!(s.prompt_tokens);
            v["prompt_eval_duration"] = json!(jobs::secs_to_nanos(s.prefill_secs));
            v["eval_count"] = json!(s.completion_tokens);
            v["eval_duration"] = json!(jobs::secs_to_nanos(s.decode_secs));
            if !s.boxes.is_empty() {
                v["boxes"] = json!(s.boxes);
            }
        }
        v
    };
    if stream == Some(false) {
        let (text, summary) = jobs::collect(rx).await.map_err(ApiError::ollama)?;
        return Ok(Json(piece(&text, Some((&summary, "")))).into_response());
    }
    let first = jobs::first_event(&mut rx).await.map_err(ApiError::ollama)?;
    let body = jobs::stream_body(first, rx, move |event| match event {
        Event::Text(t) => vec![format!("{}\n", piece(&t, None))],
        Event::Done(s) => vec![format!("{}\n", piece("", Some((&s, ""))))],
        Event::Failed(e) => vec![format!("{}\n", e.ollama().body())],
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

pub async fn tags(State(state): State<SharedState>) -> Json<Value> {
    METRICS.request("/api/tags");
    Json(json!({ "models": [{
        "name": state.model_id, "model": state.model_id, "modified_at": rfc3339_now(), "size": 0,
        "details": { "format": "safetensors", "family": state.family },
    }]}))
}

pub async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

/// The current UTC time as RFC 3339 (Ollama's `created_at`), without a date library.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, nanos) = (now.as_secs() as i64, now.subsec_nanos());
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
