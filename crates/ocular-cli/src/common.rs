//! Flags every model-using subcommand shares, and loading with progress on stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use ocular::image::{load_image, load_video, FrameSampling, ImageLimits};
use ocular::load::{LoadOptions, Precision};
use ocular::models::Media;
use ocular::pipeline::Pipeline;

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model folder in the Hugging Face layout (config.json, *.safetensors, tokenizer.json, ...);
    /// without it, the built-in model.
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Numeric type to compute in.
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    pub dtype: Precision,
    /// Run on this device: cpu, or cuda / cuda:N in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Largest image accepted, in pixels (checked from the header, before decoding).
    #[arg(long, default_value_t = ImageLimits::default().max_pixels)]
    pub max_image_pixels: u64,
    /// No progress messages on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

static PROGRESS_OPEN: AtomicBool = AtomicBool::new(false);

/// "loading weights: 42%" on a terminal's stderr, rewritten in place, at most once per percent.
/// Threads for commands that give each thread whole examples (`train`, `eval`): `asked`, or
/// every core. With more than one, candle's own per-operation threads are turned off: on a
/// small model's small matrices they cost more than they gain (measured here, 2 threads per
/// operation trained no faster than 1). Must run before candle first computes anything (its
/// thread pools start once); a value the user set in the environment stays.
pub fn example_threads(asked: Option<u32>) -> usize {
    let threads = asked.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |n| n as usize);
    if threads > 1 {
        for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
            if std::env::var_os(var).is_none() {
                std::env::set_var(var, "1");
            }
        }
    }
    threads
}

fn show_progress(done: u64, total: u64) {
    static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
    let pct = if total == 0 { 100 } else { done * 100 / total };
    if LAST.swap(pct, Ordering::Relaxed) != pct {
        PROGRESS_OPEN.store(true, Ordering::Relaxed);
        eprint!("\rloading weights: {pct:>3}%");
    }
}

/// Ends an unfinished progress line, so that what follows starts on its own line.
pub fn end_progress_line() {
    if PROGRESS_OPEN.swap(false, Ordering::Relaxed) {
        eprintln!();
    }
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
}

fn device(name: &str) -> Result<ocular::Device> {
    match name {
        "cpu" => Ok(ocular::Device::Cpu),
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            let ordinal = cuda
                .strip_prefix("cuda:")
                .map(str::parse)
                .transpose()
                .context("--device: bad CUDA ordinal")?
                .unwrap_or(0);
            ocular::Device::new_cuda(ordinal)
                .with_context(|| format!("--device {cuda}: CUDA is not available (build with --features cuda)"))
        }
        other => anyhow::bail!("--device {other:?}: expected cpu, cuda or cuda:N"),
    }
}

impl ModelArgs {
    /// The model folder's name, or the built-in model's.
    pub fn display_name(&self) -> String {
        let Some(model) = &self.model else { return crate::builtin::NAME.to_string() };
        let path = model.canonicalize().unwrap_or_else(|_| model.clone());
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "ocular".into())
    }

    /// `--model`, or the built-in model's folder (unpacked on first use).
    pub fn model_dir(&self) -> Result<PathBuf> {
        match &self.model {
            Some(dir) => Ok(dir.clone()),
            None => crate::builtin::dir(),
        }
    }

    pub fn limits(&self) -> ImageLimits {
        ImageLimits { max_pixels: self.max_image_pixels }
    }

    pub fn load(&self) -> Result<Pipeline> {
        let progress: Option<ocular::load::Progress> = if self.quiet || !std::io::stderr().is_terminal() {
            None
        } else {
            Some(std::sync::Arc::new(show_progress))
        };
        let opts =
            LoadOptions { precision: self.dtype, device: device(&self.device)?, image_limits: self.limits(), progress };
        let start = Instant::now();
        let dir = self.model_dir()?;
        if !self.quiet {
            match &self.model {
                Some(m) => eprintln!("loading {} ...", m.display()),
                None => eprintln!("loading the built-in model ({}) ...", crate::builtin::NAME),
            }
        }
        let pipeline = Pipeline::load(&dir, &opts)?;
        end_progress_line();
        if !self.quiet {
            let info = pipeline.model.info();
            eprintln!(
                "loaded {} ({:.1}M parameters, {:?}) in {:.1}s",
                info.family,
                info.total_parameters() as f64 / 1e6,
                info.dtype,
                start.elapsed().as_secs_f64()
            );
        }
        Ok(pipeline)
    }

    pub fn images(&self, paths: &[PathBuf]) -> Result<Vec<ocular::RgbImage>> {
        paths.iter().map(|p| Ok(load_image(p, &self.limits())?)).collect()
    }
}

/// Sampling and stopping flags; unset ones take the model's generation_config.json.
#[derive(clap::Args, Debug, Clone)]
pub struct GenerationArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Always take the most likely token (overrides the model's sampling defaults).
    #[arg(long)]
    pub greedy: bool,
    /// Sampling temperature; 0 means greedy.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than min_p times the most likely one (0 = off).
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Penalise tokens already in the sequence (1 = off).
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the answer contains this text (repeatable); the text is not printed.
    #[arg(long)]
    pub stop: Vec<String>,
}

impl GenerationArgs {
    pub fn options(&self, pipeline: &Pipeline) -> ocular::pipeline::GenerateOptions {
        let overrides = ocular::generate::SamplingOverrides {
            temperature: self.temperature.or(self.greedy.then_some(0.0)),
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
        };
        let s = overrides.apply(pipeline.default_sampling(self.seed));
        ocular::pipeline::GenerateOptions { sampling: s, max_new_tokens: self.max_new_tokens, stop: self.stop.clone() }
    }
}

/// Images and videos to attach, in the order of their placeholders.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MediaArgs {
    /// An image; repeat for several.
    #[arg(long)]
    pub image: Vec<PathBuf>,
    /// A video: a folder of frames (sorted by name), an animated GIF, or a video file (needs
    /// ffmpeg on PATH); repeat for several.
    #[arg(long)]
    pub video: Vec<PathBuf>,
    /// Sample video frames at this rate (default: every frame).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Keep at most this many frames per video, evenly spaced.
    #[arg(long)]
    pub max_frames: Option<usize>,
    /// Smallest image area in pixels after resizing (Qwen2-VL; default: the model's).
    #[arg(long)]
    pub min_pixels: Option<u64>,
    /// Largest image area in pixels after resizing (Qwen2-VL; default: the model's).
    #[arg(long)]
    pub max_pixels: Option<u64>,
}

impl MediaArgs {
    pub fn load(&self, model: &ModelArgs) -> Result<Media> {
        let sampling = FrameSampling { fps: self.fps, max_frames: self.max_frames, source_fps: None };
        let videos =
            self.video.iter().map(|p| Ok(load_video(p, &model.limits(), &sampling)?)).collect::<Result<Vec<_>>>()?;
        Ok(Media {
            images: model.images(&self.image)?,
            videos,
            min_pixels: self.min_pixels,
            max_pixels: self.max_pixels,
        })
    }
}
