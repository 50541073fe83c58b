//! `ocular serve`: a loaded model behind OpenAI's and Ollama's HTTP APIs, with a chat page.
//!
//! Request path: route (openai.rs / ollama.rs) -> parse and check -> media fetched and decoded
//! (media.rs) -> a job on the engine's bounded queue (jobs.rs, engine.rs) -> the engine thread
//! advances all active generations a token at a time -> events streamed back as SSE or NDJSON.

pub mod engine;
pub mod error;
pub mod jobs;
pub mod media;
pub mod metrics;
pub mod ollama;
pub mod openai;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use engine::{Engine, EngineConfig};
use error::ApiError;
use media::MediaPolicy;

/// The chat page, built into the binary.
const CHAT_PAGE: &str = include_str!("../assets/chat.html");

pub struct AppState {
    pub engine: Engine,
    /// The name `/v1/models` lists and requests may give (or leave out).
    pub model_id: String,
    pub family: String,
    pub accepts_video: bool,
    pub policy: MediaPolicy,
    pub timeout: Duration,
    pub max_body: usize,
    pub created: u64,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// A request may leave the model out, or name this one (Ollama style `name:latest` too).
    pub fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            None | Some("") => Ok(()),
            Some(m) if m == self.model_id || m.strip_suffix(":latest") == Some(self.model_id.as_str()) => Ok(()),
            Some(m) => Err(ApiError::not_found(
                "model_not_found",
                format!("model {m:?} is not served here; this server serves {:?}", self.model_id),
            )
            .param("model")),
        }
    }
}

pub fn router(state: SharedState) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/version", get(ollama::version))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), body_limit))
        // The body limit is enforced above with a JSON error; this lifts axum's 2 MB default.
        .layer(DefaultBodyLimit::max(max_body.saturating_add(1)))
        .with_state(state)
}

/// 413 in the API's error shape for bodies over `--max-body`, judged by Content-Length when
/// given and while reading otherwise.
async fn body_limit(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let ollama = request.uri().path().starts_with("/api/");
    let (parts, body) = request.into_parts();
    if declared.is_some_and(|n| n > state.max_body) {
        drain(body, state.max_body).await;
        return too_large(&state, ollama).into_response();
    }
    match axum::body::to_bytes(body, state.max_body).await {
        Ok(bytes) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Err(_) => too_large(&state, ollama).into_response(),
    }
}

/// Reads and discards an oversized body (up to a few times the limit, for a few seconds), so a
/// client that sends its whole body before reading gets the 413 instead of a broken pipe.
async fn drain(body: axum::body::Body, max_body: usize) {
    use tokio_stream::StreamExt;
    let cap = max_body.saturating_mul(8).max(16 << 20);
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > cap {
                break;
            }
        }
    })
    .await;
}

fn too_large(state: &AppState, ollama: bool) -> ApiError {
    let e = ApiError::too_large(
        "body_too_large",
        format!("the request body is over the limit of {} bytes (--max-body)", state.max_body),
    );
    if ollama {
        e.ollama()
    } else {
        e
    }
}

/// Maps axum's body rejections (never expected after `body_limit`) to API errors.
pub fn body_error(e: BytesRejection) -> ApiError {
    ApiError::new(e.status(), "invalid_body", e.body_text())
}

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], CHAT_PAGE)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn metrics_text() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::METRICS.render())
}

async fn not_found(request: Request) -> ApiError {
    route_error(StatusCode::NOT_FOUND, "not_found", "no route for", &request)
}

async fn method_not_allowed(request: Request) -> ApiError {
    route_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take", &request)
}

/// A routing error in the shape of the API the path belongs to (Ollama's under `/api/`).
fn route_error(status: StatusCode, code: &'static str, what: &str, request: &Request) -> ApiError {
    let e = ApiError::new(status, code, format!("{what} {} {}", request.method(), request.uri().path()));
    if request.uri().path().starts_with("/api/") {
        e.ollama()
    } else {
        e
    }
}

/// Serves until SIGINT or SIGTERM, then stops taking connections, lets running generations
/// finish for up to `grace`, cancels the rest, and returns.
pub async fn serve(
    state: SharedState,
    addr: SocketAddr,
    grace: Duration,
    on_ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    on_ready(listener.local_addr()?);
    let engine = state.engine.clone();
    let shutdown = async move {
        shutdown_signal().await;
        engine.shut_down(grace);
    };
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
