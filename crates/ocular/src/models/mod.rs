//! Model families. Each family composes a vision encoder, a connector and a language model,
//! and implements [`VisionLanguageModel`]; generation, the CLI and serving are written once
//! against that trait.

pub mod llava;
pub mod qwen2_vl;
mod splice;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::load::{LoadOptions, ModelDir};
use crate::prompt::TextTokenizer;
use crate::text::KvCache;

/// A prompt ready for the model: token ids (placeholders expanded) and the media tensors.
#[derive(Clone)]
pub struct Prepared {
    pub ids: Vec<u32>,
    pub media: Vec<MediaInput>,
}

/// The images and videos attached to a prompt, each list in the order of its placeholders.
#[derive(Default)]
pub struct Media {
    pub images: Vec<::image::RgbImage>,
    pub videos: Vec<crate::image::Video>,
    /// Per-request pixel limits for families that resize to any resolution (Qwen2-VL).
    pub min_pixels: Option<u64>,
    pub max_pixels: Option<u64>,
}

impl Media {
    pub fn images(images: Vec<::image::RgbImage>) -> Self {
        Self { images, ..Default::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MediaKind {
    Image,
    /// A video; Qwen2.5-VL spaces its temporal positions by the seconds each grid frame spans.
    Video {
        seconds_per_grid: f32,
    },
}

/// One preprocessed image (or video), in the layout its family's encoder takes.
#[derive(Clone)]
pub struct MediaInput {
    pub pixels: Tensor,
    /// (time, height, width) in patches.
    pub grid_thw: [usize; 3],
    pub kind: MediaKind,
}

/// What a sequence has seen so far: the KV cache and the next position id.
pub struct DecodeState {
    pub cache: KvCache,
    pub next_position: i64,
}

/// Sizes of a loaded model, for `ocular info`.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub family: &'static str,
    pub model_type: String,
    /// (part, parameters) in data-flow order.
    pub parameters: Vec<(&'static str, usize)>,
    pub dtype: candle_core::DType,
    pub device: String,
}

impl ModelInfo {
    pub fn total_parameters(&self) -> usize {
        self.parameters.iter().map(|(_, n)| n).sum()
    }

    pub fn weight_bytes(&self) -> usize {
        self.total_parameters() * self.dtype.size_in_bytes()
    }
}

pub trait VisionLanguageModel: Send + Sync {
    fn info(&self) -> &ModelInfo;
    fn tokenizer(&self) -> &TextTokenizer;
    /// The text that marks an image in a prompt (`<image>`).
    fn image_placeholder(&self) -> &str;
    /// Preprocess the media, expand each placeholder and tokenize, as the family's
    /// transformers processor does.
    fn prepare(&self, text: &str, media: &Media, add_special_tokens: bool) -> Result<Prepared>;
    fn new_state(&self) -> DecodeState;
    /// Encode the media, splice them into the prompt and run it: f32 logits of the last position.
    fn prefill(&self, input: &Prepared, state: &mut DecodeState) -> Result<Tensor>;
    /// One more token: f32 logits for the next.
    fn decode(&self, token: u32, state: &mut DecodeState) -> Result<Tensor>;
    /// One more token for each of several sequences (the server's concurrent generations):
    /// f32 logits (seqs, vocab). Families on the shared decoder run the rows as one batch.
    fn decode_batch(&self, tokens: &[u32], states: &mut [&mut DecodeState]) -> Result<Tensor> {
        let rows = tokens.iter().zip(states.iter_mut()).map(|(&t, s)| self.decode(t, s)).collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }

    /// Whether the family takes videos (its `prepare` refuses them otherwise).
    fn takes_video(&self) -> bool {
        true
    }

    /// The question that asks this model for the box of `phrase` in its own grounding idiom;
    /// None when the family was not trained to answer with boxes.
    fn grounding_prompt(&self, phrase: &str) -> Option<String> {
        let _ = phrase;
        None
    }

    /// What the box coordinates of an answer about `image` are measured in.
    fn box_coords(&self, image: &MediaInput) -> Option<crate::ground::Coords> {
        let _ = image;
        None
    }
}

const SUPPORTED: &[&str] = &["llava", "qwen2_vl", "qwen2_5_vl"];

/// Load the model in `dir`, choosing the family from `config.json`'s `model_type`.
pub fn load(dir: &ModelDir, opts: &LoadOptions) -> Result<Box<dyn VisionLanguageModel>> {
    if opts.precision == crate::load::Precision::Bf16 && opts.device.is_cpu() {
        return Err(Error::Invalid(
            "--dtype bf16 needs a GPU: the CPU tensor backend has no bf16 matrix multiply; use f32 or f16 on the CPU"
                .into(),
        ));
    }
    let config = dir.config()?;
    let model_type = config.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    match model_type {
        "llava" => Ok(Box::new(llava::Llava::load(dir, config, opts)?)),
        "qwen2_vl" | "qwen2_5_vl" => Ok(Box::new(qwen2_vl::Qwen2Vl::load(dir, config, opts)?)),
        "" => Err(Error::Config {
            path: dir.path("config.json"),
            message: format!("no `model_type` field; supported: {}", SUPPORTED.join(", ")),
        }),
        other => Err(Error::UnsupportedModel {
            path: dir.path("config.json"),
            found: other.to_string(),
            supported: SUPPORTED.to_vec(),
        }),
    }
}
