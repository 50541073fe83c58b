//! The engine: one thread owns the model. Requests wait in a bounded queue; up to `max_batch`
//! generations are active at once and every tick advances each of them by one token, their
//! decode steps run as one batch ([`Pipeline::step_all`]), so concurrent clients stream
//! together instead of one after another. A generation whose client
//! has gone (its event channel closed) or whose deadline passed is dropped at the next tick.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ocular::generate::{SamplingOverrides, SamplingParams};
use ocular::ground::Detection;
use ocular::models::{Media, Prepared};
use ocular::pipeline::{FinishReason, GenerateOptions, Pipeline, Session};
use ocular::prompt::Message;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;
use crate::metrics::METRICS;

/// Sampling a request asks for; what it leaves unset comes from the model's generation_config.json.
#[derive(Debug, Clone, Default)]
pub struct Sampling {
    pub overrides: SamplingOverrides,
    pub seed: Option<u64>,
}

/// One request, ready to generate.
pub struct Job {
    pub messages: Vec<Message>,
    pub media: Media,
    /// The request's last image (its index among the request's images, and its width and
    /// height): boxes in the answer are placed on it, as in a chat the question is about the
    /// image attached last.
    pub boxed_image: Option<(usize, (u32, u32))>,
    pub sampling: Sampling,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
    pub deadline: Instant,
}

pub enum Event {
    /// Text that is final (stop strings already cut).
    Text(String),
    Done(Summary),
    Failed(ApiError),
}

pub struct Summary {
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub boxes: Vec<BoxOut>,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

/// A box the answer named, in pixels of the request's image number `image`.
#[derive(Debug, Clone, Serialize)]
pub struct BoxOut {
    /// Label and box in pixels, as `ocular ground` and `ocular run --json` write them.
    #[serde(flatten)]
    pub detection: Detection,
    /// Which of the request's images (from 0) the box is on.
    pub image: usize,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub max_batch: usize,
    pub queue: usize,
    /// Used when a request sets no limit and the model's generation config none either.
    pub default_max_tokens: usize,
}

/// What the HTTP side needs to know about the loaded model.
pub struct ModelFacts {
    pub family: String,
    pub accepts_video: bool,
}

/// What the HTTP side holds: the queue's sending end and the shutdown switch.
#[derive(Clone)]
pub struct Engine {
    queue: SyncSender<Job>,
    /// Set on shutdown: generations still running at this instant are cancelled.
    cutoff: Arc<Mutex<Option<Instant>>>,
}

impl Engine {
    /// Starts the engine thread with the pipeline `load` makes there, and waits for the load.
    pub fn start<F>(load: F, config: EngineConfig) -> Result<(Engine, ModelFacts, std::thread::JoinHandle<()>), String>
    where
        F: FnOnce() -> Result<Pipeline, String> + Send + 'static,
    {
        let (queue, jobs) = mpsc::sync_channel(config.queue.max(1));
        let (ready_tx, ready_rx) = mpsc::channel();
        let cutoff = Arc::new(Mutex::new(None));
        let thread_cutoff = cutoff.clone();
        let thread = std::thread::Builder::new()
            .name("ocular-engine".into())
            .spawn(move || match load() {
                Ok(pipeline) => {
                    let family = pipeline.model.info().family.to_string();
                    let _ = ready_tx.send(Ok(ModelFacts { accepts_video: family == "qwen2_vl", family }));
                    run(&pipeline, jobs, &config, &thread_cutoff);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| format!("cannot start the engine thread: {e}"))?;
        let facts = ready_rx.recv().map_err(|_| "the engine thread stopped while loading".to_string())??;
        Ok((Engine { queue, cutoff }, facts, thread))
    }

    /// Queues `job`, or answers 503 when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        METRICS.queue_depth.fetch_add(1, Relaxed);
        self.queue.try_send(job).map_err(|e| {
            METRICS.queue_depth.fetch_sub(1, Relaxed);
            match e {
                TrySendError::Full(_) => ApiError::busy(),
                TrySendError::Disconnected(_) => ApiError::internal("the engine has stopped"),
            }
        })
    }

    /// Generations still running `grace` from now are cancelled; queued ones are refused.
    pub fn shut_down(&self, grace: Duration) {
        *self.cutoff.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + grace);
    }
}

struct Active<'p> {
    job: Job,
    prepared: Prepared,
    session: Session<'p>,
    first_token: bool,
}

fn run(pipeline: &Pipeline, jobs: Receiver<Job>, config: &EngineConfig, cutoff: &Mutex<Option<Instant>>) {
    let mut active: Vec<Active> = Vec::new();
    loop {
        let stopping = *cutoff.lock().unwrap_or_else(|e| e.into_inner());
        // Admit queued requests while there is room (none once shutting down).
        while active.len() < config.max_batch && stopping.is_none() {
            let job = if active.is_empty() {
                match jobs.recv_timeout(Duration::from_millis(100)) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            METRICS.queue_depth.fetch_sub(1, Relaxed);
            if job.events.is_closed() {
                METRICS.cancelled.fetch_add(1, Relaxed);
                continue;
            }
            match admit(pipeline, job, config) {
                Ok(a) => active.push(a),
                Err((job, e)) => {
                    let _ = job.events.send(Event::Failed(e));
                }
            }
        }
        if let Some(at) = stopping {
            while let Ok(job) = jobs.try_recv() {
                METRICS.queue_depth.fetch_sub(1, Relaxed);
                let _ = job.events.send(Event::Failed(shutting_down()));
            }
            if Instant::now() >= at {
                for a in active.drain(..) {
                    METRICS.cancelled.fetch_add(1, Relaxed);
                    let _ = a.job.events.send(Event::Failed(shutting_down()));
                }
            }
            if active.is_empty() {
                return;
            }
        }
        METRICS.active.store(active.len() as u64, Relaxed);
        tick(pipeline, &mut active);
        METRICS.active.store(active.len() as u64, Relaxed);
    }
}

fn admit<'p>(pipeline: &'p Pipeline, job: Job, config: &EngineConfig) -> Result<Active<'p>, (Job, ApiError)> {
    let started = Instant::now();
    let prepared = match pipeline.prepare_chat(&job.messages, &job.media) {
        Ok(p) => p,
        Err(e) => return Err((job, ApiError::bad_request("invalid_prompt", e.to_string()))),
    };
    let defaults = pipeline.generation_config.max_new_tokens_for(prepared.ids.len());
    let options = GenerateOptions {
        sampling: sampling(pipeline, &job.sampling),
        max_new_tokens: job.max_tokens.or(defaults).unwrap_or(config.default_max_tokens),
        stop: job.stop.clone(),
    };
    if let Err(e) = options.sampling.validate() {
        return Err((job, ApiError::bad_request("invalid_sampling", e.to_string())));
    }
    let session = match pipeline.start(&prepared, &options) {
        Ok(s) => s,
        Err(e) => return Err((job, ApiError::internal(e.to_string()))),
    };
    if !job.media.images.is_empty() || !job.media.videos.is_empty() {
        METRICS.image_encode.observe(started.elapsed().as_secs_f64());
    }
    Ok(Active { job, prepared, session, first_token: true })
}

fn sampling(pipeline: &Pipeline, s: &Sampling) -> SamplingParams {
    // Without a seed each request samples its own way, as OpenAI's and Ollama's servers do.
    let mut base = pipeline.default_sampling(s.seed.unwrap_or_else(fresh_seed));
    if s.overrides.temperature.is_some_and(|t| t > 0.0) && base.is_greedy() {
        // The model's config asks for greedy decoding, so its top-k is unset: sampling at the
        // requested temperature should not inherit transformers' default of 50.
        base.top_k = 0;
    }
    s.overrides.apply(base)
}

/// A seed no other request of this process gets: the clock's nanoseconds and a counter,
/// spread by splitmix64 so that close seeds do not start close streams.
fn fresh_seed() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut state = nanos ^ NEXT.fetch_add(1, Relaxed).rotate_left(48);
    ocular::rng::splitmix64(&mut state)
}

/// One token for every active generation, the model reading them as one batch. Generations
/// that are finished, failed, cancelled or out of time leave `active`.
fn tick(pipeline: &Pipeline, active: &mut Vec<Active>) {
    active.retain(|a| {
        if a.job.events.is_closed() {
            METRICS.cancelled.fetch_add(1, Relaxed);
            return false;
        }
        if Instant::now() >= a.job.deadline {
            METRICS.cancelled.fetch_add(1, Relaxed);
            let e = ApiError::new(axum::http::StatusCode::GATEWAY_TIMEOUT, "timeout", "the request timed out");
            let _ = a.job.events.send(Event::Failed(e));
            return false;
        }
        true
    });
    if active.is_empty() {
        return;
    }
    METRICS.decode_step(active.len());
    let results = pipeline.step_all(&mut active.iter_mut().map(|a| &mut a.session).collect::<Vec<_>>());
    let keep: Vec<bool> = active.iter_mut().zip(results).map(|(a, r)| deliver(pipeline, a, r)).collect();
    let mut keep = keep.into_iter();
    active.retain(|_| keep.next().unwrap_or(false));
}

/// Sends what a step produced; false when the generation is over.
fn deliver(pipeline: &Pipeline, a: &mut Active, step: ocular::Result<Option<String>>) -> bool {
    match step {
        Ok(Some(text)) => {
            if a.first_token {
                a.first_token = false;
                METRICS.time_to_first_token.observe(a.job.arrived.elapsed().as_secs_f64());
            }
            METRICS.generated_tokens.fetch_add(1, Relaxed);
            if !text.is_empty() {
                let _ = a.job.events.send(Event::Text(text));
            }
            true
        }
        Ok(None) => {
            let _ = a.job.events.send(Event::Done(summary(pipeline, a)));
            false
        }
        Err(e) => {
            let _ = a.job.events.send(Event::Failed(ApiError::internal(e.to_string())));
            false
        }
    }
}

fn summary(pipeline: &Pipeline, a: &Active) -> Summary {
    let session = &a.session;
    let tokens = session.tokens();
    let decode_secs = session.decode_secs();
    if tokens.len() > 1 && decode_secs > 0.0 {
        METRICS.decode_rate((tokens.len() - 1) as f64 / decode_secs);
    }
    // Box markers are special tokens, so boxes are read from the text with them kept.
    let boxes = match (a.job.boxed_image, pipeline.model.tokenizer().decode(tokens, false)) {
        (Some((image, size)), Ok(raw)) => pipeline
            .boxes_on(&raw, &a.prepared, image, size)
            .map(|g| g.boxes.into_iter().map(|detection| BoxOut { detection, image }).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Summary {
        finish_reason: session.finish_reason().unwrap_or(FinishReason::Length),
        prompt_tokens: session.prompt_tokens(),
        completion_tokens: tokens.len(),
        boxes,
        prefill_secs: session.prefill_secs(),
        decode_secs,
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down")
}
