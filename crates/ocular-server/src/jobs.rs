//! What the OpenAI and Ollama routes share: a conversation with its media references becomes a
//! queued [`Job`], and the engine's events come back as a stream or as one answer.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use ocular::models::Media;
use ocular::prompt::{Message, Part};
use tokio::sync::mpsc;

use crate::engine::{Event, Job, Sampling, Summary};
use crate::error::ApiError;
use crate::media::{self, MediaPolicy};
use crate::AppState;

/// Where an image or video comes from, and the request field that named it.
pub enum Source {
    Url(String),
    Base64(String),
}

pub enum MediaRef {
    Image(Source, String),
    Video(Source, String),
}

/// A conversation as the template takes it (media as placeholders, in order) plus the media.
#[derive(Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub media: Vec<MediaRef>,
}

impl Conversation {
    pub fn push_text(&mut self, role: &str, text: &str) {
        self.messages.push(Message::new(role, vec![Part::Text { text: text.to_string() }]));
    }
}

pub struct Request {
    pub conversation: Conversation,
    pub sampling: Sampling,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
}

/// Fetches and decodes the media (off the async threads), then queues the job.
pub async fn submit(state: &AppState, request: Request) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
    let arrived = Instant::now();
    let Request { conversation, sampling, max_tokens, stop } = request;
    let images = conversation.media.iter().filter(|m| matches!(m, MediaRef::Image(..))).count();
    if images > state.policy.max_images {
        return Err(ApiError::too_large(
            "too_many_images",
            format!(
                "the request has {images} images; this server takes at most {} (--max-images)",
                state.policy.max_images
            ),
        ));
    }
    let policy = state.policy.clone();
    let media_refs = conversation.media;
    let media = tokio::task::spawn_blocking(move || load_media(media_refs, &policy))
        .await
        .map_err(|e| ApiError::internal(format!("media loading failed: {e}")))??;
    let boxed_image = media.images.last().map(|i| (media.images.len() - 1, i.dimensions()));
    let (events, rx) = mpsc::unbounded_channel();
    state.engine.submit(Job {
        messages: conversation.messages,
        media,
        boxed_image,
        sampling,
        max_tokens,
        stop,
        events,
        arrived,
        deadline: arrived + state.timeout,
    })?;
    Ok(rx)
}

fn load_media(refs: Vec<MediaRef>, policy: &MediaPolicy) -> Result<Media, ApiError> {
    let mut media = Media::default();
    for r in refs {
        let (source, param, is_video) = match r {
            MediaRef::Image(s, p) => (s, p, false),
            MediaRef::Video(s, p) => (s, p, true),
        };
        let bytes = match source {
            Source::Url(url) => media::fetch(&url, policy, &param)?,
            Source::Base64(data) => media::decode_base64(&data, policy, &param)?,
        };
        if is_video {
            media.videos.push(media::decode_video(&bytes, policy, &param)?);
        } else {
            media.images.push(media::decode(&bytes, policy, &param)?);
        }
    }
    Ok(media)
}

/// Waits for the first event, so that a request failing before its first token (a prompt the
/// template rejects, a full context) gets an error status rather than a broken stream.
pub async fn first_event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Result<Event, ApiError> {
    match rx.recv().await {
        Some(Event::Failed(e)) => Err(e),
        Some(e) => Ok(e),
        None => Err(ApiError::internal("the engine dropped the request")),
    }
}

/// Runs a request to its end: the whole text and the summary.
pub async fn collect(mut rx: mpsc::UnboundedReceiver<Event>) -> Result<(String, Summary), ApiError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done(summary) => return Ok((text, summary)),
            Event::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::internal("the engine dropped the request"))
}

/// A streaming body: `render` turns each engine event into the lines to send. When the client
/// goes away the body is dropped, the forwarding task's send fails, and it drops the engine's
/// channel, which the engine sees as a cancellation.
pub fn stream_body(
    first: Event,
    mut rx: mpsc::UnboundedReceiver<Event>,
    mut render: impl FnMut(Event) -> Vec<String> + Send + 'static,
) -> Body {
    let (tx, out) = mpsc::channel::<Result<String, Infallible>>(16);
    tokio::spawn(async move {
        let mut next = Some(first);
        while let Some(event) = next.take() {
            let last = matches!(event, Event::Done(_) | Event::Failed(_));
            for chunk in render(event) {
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            if last {
                return;
            }
            next = tokio::select! {
                e = rx.recv() => e,
                _ = tx.closed() => None,
            };
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(out))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn secs_to_nanos(secs: f64) -> u64 {
    Duration::from_secs_f64(secs.max(0.0)).as_nanos() as u64
}
