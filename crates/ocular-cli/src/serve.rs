//! `ocular serve`: the model behind OpenAI- and Ollama-compatible HTTP APIs, with a chat page.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ocular_server::media::MediaPolicy;
use ocular_server::{AppState, Engine, EngineConfig};

use crate::common::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Name the API lists for the model (default: the model folder's name).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Accept `file://` image and video URLs inside this folder.
    #[arg(long)]
    pub allow_files: Option<PathBuf>,
    /// Accept `http(s)://` image and video URLs (fetched within --max-body and --fetch-timeout).
    #[arg(long)]
    pub allow_remote: bool,
    /// Seconds a remote image or video may take to fetch, connection included.
    #[arg(long, default_value_t = 10.0)]
    pub fetch_timeout: f64,
    /// Largest request body, and largest fetched media file, in bytes.
    #[arg(long, default_value_t = 32 << 20)]
    pub max_body: usize,
    /// Most images in one request.
    #[arg(long, default_value_t = 8)]
    pub max_images: usize,
    /// Generations that progress together.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Requests that may wait for a slot; more get 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Seconds a request may take, queueing included.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Tokens generated when a request sets no limit and the model's generation config none.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Seconds running generations get to finish after SIGINT or SIGTERM.
    #[arg(long, default_value_t = 10)]
    pub shutdown_grace: u64,
    /// Video frames kept per second of video, and at most this many frames.
    #[arg(long, default_value_t = 2.0)]
    pub video_fps: f64,
    #[arg(long, default_value_t = 32)]
    pub max_frames: usize,
}

pub fn main(args: Args) -> Result<()> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .with_context(|| format!("--host {:?} --port {}: not an address to listen on", args.host, args.port))?;
    anyhow::ensure!(
        args.fetch_timeout.is_finite() && args.fetch_timeout > 0.0,
        "--fetch-timeout {}: expected a number of seconds above 0",
        args.fetch_timeout
    );
    if let Some(dir) = &args.allow_files {
        anyhow::ensure!(dir.is_dir(), "--allow-files {}: not a folder", dir.display());
    }
    let model_id = args.model_name.clone().unwrap_or_else(|| args.model.display_name());
    let model_args = args.model.clone();
    let config =
        EngineConfig { max_batch: args.max_batch.max(1), queue: args.queue, default_max_tokens: args.max_tokens };
    let (engine, facts, engine_thread) =
        Engine::start(move || model_args.load().map_err(|e| format!("{e:#}")), config).map_err(anyhow::Error::msg)?;
    let state = Arc::new(AppState {
        engine,
        model_id,
        family: facts.family,
        accepts_video: facts.accepts_video,
        policy: MediaPolicy {
            allow_files: args.allow_files.clone(),
            allow_remote: args.allow_remote,
            max_bytes: args.max_body as u64,
            remote_timeout: Duration::from_secs_f64(args.fetch_timeout),
            limits: args.model.limits(),
            max_images: args.max_images,
            video_fps: args.video_fps,
            max_frames: args.max_frames,
        },
        timeout: Duration::from_secs(args.timeout),
        max_body: args.max_body,
        created: ocular_server::jobs::unix_now(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime
        .block_on(ocular_server::serve(state, addr, Duration::from_secs(args.shutdown_grace), |bound| {
            eprintln!("listening on http://{bound}");
        }))
        .with_context(|| format!("serving on {addr}"))?;
    // The server has stopped: the engine finishes (or cancels) what is left and exits.
    let _ = engine_thread.join();
    eprintln!("stopped");
    Ok(())
}
