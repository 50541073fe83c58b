//! OpenAI's chat completions API: `POST /v1/chat/completions` (plain and SSE streaming) and
//! `GET /v1/models`. Boxes the answer names come back in `message.boxes` (streaming: in the
//! `delta` of the chunk that carries `finish_reason`), in pixels of the request's first image.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ocular::generate::SamplingOverrides;
use ocular::pipeline::FinishReason;
use ocular::prompt::{Message, Part};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::{Event, Sampling, Summary};
use crate::error::ApiError;
use crate::jobs::{self, Conversation, MediaRef, Request, Source};
use crate::metrics::METRICS;
use crate::SharedState;

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Vec<ChatMessage>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Parses JSON, naming what is wrong: malformed JSON and wrong field types are 400s.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the request body is not valid JSON: {e}")))?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("the request does not match the schema: {e}")))
}

pub async fn models(State(state): State<SharedState>) -> Json<Value> {
    METRICS.request("/v1/models");
    Json(json!({
        "object": "list",
        "data": [{ "id": state.model_id, "object": "model", "created": state.created, "owned_by": "ocular" }],
    }))
}

pub async fn chat_completions(State(state): State<SharedState>, body: Bytes) -> Result<Response, ApiError> {
    METRICS.request("/v1/chat/completions");
    let request: ChatRequest = parse_json(&body)?;
    state.check_model(request.model.as_deref())?;
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("unsupported", "only n = 1 is supported").param("n"));
    }
    let conversation = conversation(&request.messages, state.accepts_video)?;
    let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let stream = request.stream;
    let job = Request {
        conversation,
        sampling: Sampling {
            overrides: SamplingOverrides {
                temperature: request.temperature,
                top_p: request.top_p,
                ..Default::default()
            },
            seed: request.seed,
        },
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        stop: match request.stop {
            None => vec![],
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        },
    };
    let mut rx = jobs::submit(&state, job).await?;
    let id = format!("chatcmpl-{:016x}", rand_id());
    let (model, created) = (state.model_id.clone(), jobs::unix_now());
    if !stream {
        let (text, summary) = jobs::collect(rx).await?;
        return Ok(Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text, "boxes": summary.boxes },
                "finish_reason": finish(summary.finish_reason),
            }],
            "usage": usage(&summary),
        }))
        .into_response());
    }
    let first = jobs::first_event(&mut rx).await?;
    let chunk = move |delta: Value, finish: Option<&str>| {
        let c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        (sse(&c), c)
    };
    let mut opened = false;
    let body = jobs::stream_body(first, rx, move |event| {
        let mut out = Vec::new();
        if !opened {
            opened = true;
            out.push(chunk(json!({ "role": "assistant", "content": "" }), None).0);
        }
        match event {
            Event::Text(t) => out.push(chunk(json!({ "content": t }), None).0),
            Event::Done(summary) => {
                let mut delta = json!({});
                if !summary.boxes.is_empty() {
                    delta["boxes"] = json!(summary.boxes);
                }
                out.push(chunk(delta, Some(finish(summary.finish_reason))).0);
                if include_usage {
                    let (_, mut last) = chunk(json!({}), None);
                    last["choices"] = json!([]);
                    last["usage"] = usage(&summary);
                    out.push(sse(&last));
                }
                out.push("data: [DONE]\n\n".into());
            }
            Event::Failed(e) => {
                out.push(sse(&e.body()));
                out.push("data: [DONE]\n\n".into());
            }
        }
        out
    });
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body).into_response())
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn finish(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn usage(s: &Summary) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
    })
}

pub fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

/// OpenAI messages to template messages; media parts become placeholders where they stand.
fn conversation(messages: &[ChatMessage], accepts_video: bool) -> Result<Conversation, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("invalid_request", "messages is empty").param("messages"));
    }
    let mut conv = Conversation::default();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::bad_request(
                    "invalid_role",
                    format!("unsupported role {other:?}: use system, user or assistant"),
                )
                .param(format!("messages[{i}].role")))
            }
        };
        let mut content = Vec::new();
        match &m.content {
            None => {}
            Some(Content::Text(t)) => content.push(Part::Text { text: t.clone() }),
            Some(Content::Parts(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    let param = format!("messages[{i}].content[{j}]");
                    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                    let url = |key: &str| -> Result<String, ApiError> {
                        let v = part.get(key);
                        v.and_then(|v| v.get("url").or(Some(v))).and_then(Value::as_str).map(str::to_string).ok_or_else(
                            || {
                                ApiError::bad_request("invalid_request", format!("a {kind} part needs {key}.url"))
                                    .param(param.clone())
                            },
                        )
                    };
                    match kind {
                        "text" => {
                            let text = part.get("text").and_then(Value::as_str).ok_or_else(|| {
                                ApiError::bad_request("invalid_request", "a text part needs a string text")
                                    .param(param.clone())
                            })?;
                            content.push(Part::Text { text: text.to_string() });
                        }
                        "image_url" if role == "user" => {
                            conv.media.push(MediaRef::Image(Source::Url(url("image_url")?), param.clone()));
                            content.push(Part::Image);
                        }
                        "video_url" if role == "user" => {
                            if !accepts_video {
                                return Err(ApiError::bad_request(
                                    "unsupported_content",
                                    "this model does not take video",
                                )
                                .param(param));
                            }
                            conv.media.push(MediaRef::Video(Source::Url(url("video_url")?), param.clone()));
                            content.push(Part::Video);
                        }
                        "image_url" | "video_url" => {
                            return Err(ApiError::bad_request(
                                "unsupported_content",
                                "only user messages may carry media",
                            )
                            .param(param))
                        }
                        other => {
                            return Err(ApiError::bad_request(
                                "unsupported_content",
                                format!("unknown content part type {other:?}: expected text, image_url or video_url"),
                            )
                            .param(param))
                        }
                    }
                }
            }
        }
        conv.messages.push(Message::new(role, content));
    }
    Ok(conv)
}
