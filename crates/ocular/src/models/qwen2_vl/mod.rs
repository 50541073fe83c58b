//! Qwen2-VL and Qwen2.5-VL (Wang et al. 2024; Bai et al. 2025): a native-resolution ViT whose
//! 2x2 patch blocks are merged into language-model tokens, placed in the prompt with 3-D
//! rotary positions (M-RoPE). Follows transformers' `modeling_qwen2_vl.py` / `modeling_qwen2_5_vl.py`.

pub mod config;
pub mod processor;

use candle_core::{DType, Device, Module, Tensor};

use self::config::{Qwen2VlConfig, Variant};
use self::processor::Qwen2VlProcessor;
use super::splice::splice;
use super::{DecodeState, Media, MediaInput, MediaKind, ModelInfo, Prepared, VisionLanguageModel};
use crate::connect::PatchMerger;
use crate::error::{Error, Result};
use crate::ground::Coords;
use crate::image::Patches;
use crate::load::{LoadOptions, ModelDir, WeightIndex};
use crate::prompt::positions::{mrope_positions, VisionSpan};
use crate::prompt::{placeholders, TextTokenizer};
use crate::text::{CausalDecoder, Head, KvCache, RotaryEmbedding, Rotation};
use crate::vision::Qwen2VisionTransformer;

const IMAGE_PLACEHOLDER: &str = "<|image_pad|>";
const VIDEO_PLACEHOLDER: &str = "<|video_pad|>";

/// transformers 5 nests the parts under `model.`; Hub 4.x checkpoints put the text model at
/// `model.` and the vision tower at `visual.`.
pub struct Layout {
    text: &'static str,
    pub(crate) visual: &'static str,
}

impl Layout {
    /// The names transformers 5 uses in memory, which Ocular's trainer writes.
    pub const V5: Layout = Layout { text: "model.language_model", visual: "model.visual" };

    fn detect(index: &WeightIndex, dir: &ModelDir) -> Result<Self> {
        for (text, visual) in [("model.language_model", "model.visual"), ("model", "visual")] {
            if index.contains(&format!("{text}.embed_tokens.weight")) {
                return Ok(Self { text, visual });
            }
        }
        Err(Error::Weights {
            dir: dir.root().to_path_buf(),
            message: "cannot find the language model's embeddings: expected model.language_model.embed_tokens.weight (transformers 5) or model.embed_tokens.weight (Hub 4.x layout)".into(),
        })
    }
}

pub struct Qwen2Vl {
    config: Qwen2VlConfig,
    processor: Qwen2VlProcessor,
    tokenizer: TextTokenizer,
    visual: Qwen2VisionTransformer,
    merger: PatchMerger,
    language_model: CausalDecoder,
    rotary: RotaryEmbedding,
    mrope_section: Vec<usize>,
    info: ModelInfo,
    dtype: DType,
    device: Device,
    /// Where the vision tower's (and merger's) weights are named (see [`Layout`]).
    visual_prefix: &'static str,
}

impl Qwen2Vl {
    pub fn load(dir: &ModelDir, config: serde_json::Value, opts: &LoadOptions) -> Result<Self> {
        let index = WeightIndex::read(dir.weight_files()?)?;
        let vb = index.var_builder(opts.precision.dtype(), &opts.device, opts.progress.clone())?;
        let (mut model, layout) = Self::on_weights(dir, config, Some(&index), vb)?;
        let merger = index.count_params(&format!("{}.merger", layout.visual));
        let head = if model.config.tie_word_embeddings { 0 } else { index.count_params("lm_head") };
        model.info.parameters = vec![
            ("vision tower", index.count_params(layout.visual) - merger),
            ("patch merger", merger),
            ("language model", index.count_params(layout.text) + head),
        ];
        Ok(model)
    }

    /// The model of folder `dir` (its `config`, tokenizer and processor) on `vb`'s weights,
    /// named as in `index` (a checkpoint's), or as transformers 5 names them (a new model's
    /// `VarMap` when training).
    pub fn on_weights(
        dir: &ModelDir,
        config: serde_json::Value,
        index: Option<&WeightIndex>,
        vb: candle_nn::VarBuilder,
    ) -> Result<(Self, Layout)> {
        let config = Qwen2VlConfig::from_json(&config)
            .map_err(|message| Error::Config { path: dir.path("config.json"), message })?;
        let tokenizer = TextTokenizer::load(dir)?;
        let processor = Qwen2VlProcessor::load(dir)?;
        let layout = index.map_or(Ok(Layout::V5), |index| Layout::detect(index, dir))?;
        let model =
            Self::build(config, processor, tokenizer, vb, &layout).map_err(|e| Error::weights(dir.root(), &e))?;
        Ok((model, layout))
    }

    /// The model on `vb`'s weights, named as `layout` says; `config` has been validated.
    fn build(
        config: Qwen2VlConfig,
        processor: Qwen2VlProcessor,
        tokenizer: TextTokenizer,
        vb: candle_nn::VarBuilder,
        layout: &Layout,
    ) -> candle_core::Result<Self> {
        let rotary = config.text.rotary().map_err(candle_core::Error::Msg)?;
        let mrope_section = config.text.mrope_section().map_err(candle_core::Error::Msg)?;
        let v = &config.vision;
        let visual = Qwen2VisionTransformer::load(v, vb.pp(layout.visual))?;
        let rms = config.variant == Variant::Qwen25Vl;
        let unit = v.merge_size * v.merge_size;
        let merger = PatchMerger::load(v.width, v.out_dim, unit, rms, vb.pp(layout.visual).pp("merger"))?;
        let head = if config.tie_word_embeddings { Head::Tied } else { Head::Own(vb.pp("lm_head")) };
        let language_model = CausalDecoder::load(config.text.decoder_spec(), vb.pp(layout.text), head)?;
        let info = ModelInfo {
            family: "qwen2_vl",
            model_type: match config.variant {
                Variant::Qwen2Vl => "qwen2_vl".into(),
                Variant::Qwen25Vl => "qwen2_5_vl".into(),
            },
            parameters: vec![],
            dtype: vb.dtype(),
            device: format!("{:?}", vb.device()),
        };
        Ok(Self {
            config,
            processor,
            tokenizer,
            visual,
            merger,
            language_model,
            rotary,
            mrope_section,
            info,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            visual_prefix: layout.visual,
        })
    }

    pub fn config(&self) -> &Qwen2VlConfig {
        &self.config
    }

    /// Whether a weight's name is the vision tower's or its patch merger's.
    pub fn is_vision_tower(&self, name: &str) -> bool {
        name.strip_prefix(self.visual_prefix).is_some_and(|rest| rest.starts_with('.'))
    }

    /// Training: f32 logits (rows, vocab) at `rows` of a packed sequence, each predicting the
    /// token after it, and for each `k` in `taps` every position's hidden state after the
    /// language model's first `k` layers (seq, hidden), for auxiliary losses. The caller gives
    /// the M-RoPE positions and the (seq, seq) additive attention mask: `train::batch` packs
    /// several answers about one image after a single copy of it, each answer seeing the shared
    /// prefix and itself only. Without `train_vision` the media features are cut from the
    /// graph, so backward skips the vision tower and merger.
    pub fn logits_packed_tapped(
        &self,
        input: &Prepared,
        positions: &[[i64; 3]],
        mask: &Tensor,
        rows: &[u32],
        train_vision: bool,
        taps: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let embeds = self.embed_tokens_and_media(input, train_vision)?;
        let rotation = self.rotation(positions)?;
        let (hidden, tapped) = self.language_model.hidden_states_masked(&embeds, &rotation, mask, taps)?;
        let rows = hidden.squeeze(0)?.index_select(&Tensor::new(rows, &self.device)?, 0)?;
        let tapped = tapped.into_iter().map(|t| t.squeeze(0)).collect::<candle_core::Result<_>>()?;
        Ok((self.language_model.logits(&rows)?, tapped))
    }

    /// The language model's layer `layer` attention weights (heads, queries, seq) at the rows
    /// `queries`, from `entering` (seq, hidden), the stream [`Self::logits_packed_tapped`]
    /// tapped before that layer for the same `positions` and `mask`.
    pub fn attention_weights_packed(
        &self,
        layer: usize,
        entering: &Tensor,
        positions: &[[i64; 3]],
        mask: &Tensor,
        queries: &[u32],
    ) -> Result<Tensor> {
        let rotation = self.rotation(positions)?;
        Ok(self.language_model.attention_weights(layer, &entering.unsqueeze(0)?, &rotation, mask, queries)?)
    }

    /// The prompt's embeddings with the media spliced in, its M-RoPE rotation after what
    /// `state` has seen, and the position delta later tokens carry.
    fn embed_prompt(&self, input: &Prepared, state: &DecodeState) -> Result<(Tensor, Rotation, i64)> {
        let embeds = self.embed_tokens_and_media(input, false)?;
        let (positions, delta) = self.position_ids(input)?;
        let positions: Vec<[i64; 3]> = positions.iter().map(|p| p.map(|v| v + state.next_position)).collect();
        Ok((embeds, self.rotation(&positions)?, delta))
    }

    /// Token embeddings (1, seq, hidden) with each image and video placeholder replaced by
    /// its vision features (kept in the autograd graph with `media_grad`).
    fn embed_tokens_and_media(&self, input: &Prepared, media_grad: bool) -> Result<Tensor> {
        if input.ids.is_empty() {
            return Err(Error::Invalid("the prompt is empty: no tokens to run".into()));
        }
        let (images, videos): (Vec<&MediaInput>, Vec<&MediaInput>) =
            input.media.iter().partition(|m| m.kind == MediaKind::Image);
        let mut features = Vec::new();
        if !images.is_empty() {
            features.push((self.config.image_token_id, self.encode(&images)?));
        }
        if !videos.is_empty() {
            features.push((self.config.video_token_id, self.encode(&videos)?));
        }
        if !media_grad {
            features = features.into_iter().map(|(id, f)| (id, f.detach())).collect();
        }
        let text = self.language_model.embed(&Tensor::new(input.ids.as_slice(), &self.device)?)?;
        splice(&text, &input.ids, &features, &self.device)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn processor(&self) -> &Qwen2VlProcessor {
        &self.processor
    }

    fn media_input(&self, p: Patches, kind: MediaKind) -> Result<MediaInput> {
        let pixels = Tensor::from_vec(p.data, (p.rows, p.cols), &self.device)?;
        Ok(MediaInput { pixels, grid_thw: p.grid_thw, kind })
    }

    /// Tokens one image or video takes in the prompt: its patches over the merge block.
    fn tokens(&self, grid: [usize; 3]) -> usize {
        grid.iter().product::<usize>() / (self.config.vision.merge_size * self.config.vision.merge_size)
    }

    /// Images through the vision tower and merger, as the prompt would carry them: the merged
    /// tokens of all images one after another (tokens, hidden), and each image's merged grid
    /// `[h, w]` (tokens in row-major order). Training supervises these tokens directly.
    pub fn image_tokens(&self, images: &[::image::RgbImage]) -> Result<(Tensor, Vec<[usize; 2]>)> {
        let inputs = images
            .iter()
            .map(|img| self.media_input(self.processor.image.preprocess_image(img)?, MediaKind::Image))
            .collect::<Result<Vec<_>>>()?;
        let merge = self.config.vision.merge_size;
        let grids = inputs.iter().map(|m| [m.grid_thw[1] / merge, m.grid_thw[2] / merge]).collect();
        Ok((self.encode(&inputs.iter().collect::<Vec<_>>())?, grids))
    }

    /// One video's frames through the vision tower and merger, as the prompt would carry them
    /// (tokens, hidden), and its merged grid `[t, h, w]`: each time step covers
    /// `temporal_patch_size` frames, its tokens row-major, one time step after another.
    pub fn video_tokens(&self, frames: &[::image::RgbImage]) -> Result<(Tensor, [usize; 3])> {
        let seconds_per_grid = self.processor.video.seconds_per_grid_t(crate::image::FOLDER_FPS) as f32;
        let video =
            self.media_input(self.processor.video.preprocess_video(frames)?, MediaKind::Video { seconds_per_grid })?;
        let [t, h, w] = video.grid_thw;
        let merge = self.config.vision.merge_size;
        Ok((self.encode(&[&video])?, [t, h / merge, w / merge]))
    }

    /// All media of one kind through the vision tower and merger: (tokens, hidden).
    fn encode(&self, media: &[&MediaInput]) -> Result<Tensor> {
        let patches = Tensor::cat(&media.iter().map(|m| &m.pixels).collect::<Vec<_>>(), 0)?.to_dtype(self.dtype)?;
        let grids: Vec<[usize; 3]> = media.iter().map(|m| m.grid_thw).collect();
        let features = self.visual.forward(&patches, &grids)?;
        Ok(self.merger.forward(&features)?)
    }

    fn rotation(&self, positions: &[[i64; 3]]) -> Result<Rotation> {
        let (cos, sin) = self.rotary.cos_sin_mrope(positions, &self.mrope_section, self.dtype, &self.device)?;
        Ok(Rotation { cos, sin })
    }
}

impl VisionLanguageModel for Qwen2Vl {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn image_placeholder(&self) -> &str {
        IMAGE_PLACEHOLDER
    }

    fn prepare(&self, text: &str, media: &Media, add_special_tokens: bool) -> Result<Prepared> {
        let image_cfg = self.processor.image.clone().with_pixel_limits(media.min_pixels, media.max_pixels);
        let video_cfg = self.processor.video.clone().with_pixel_limits(media.min_pixels, media.max_pixels);
        let mut inputs = Vec::new();
        for img in &media.images {
            inputs.push(self.media_input(image_cfg.preprocess_image(img)?, MediaKind::Image)?);
        }
        for video in &media.videos {
            let patches =
                video_cfg.preprocess_video(&video.frames.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>())?;
            let seconds_per_grid = video_cfg.seconds_per_grid_t(video.fps) as f32;
            inputs.push(self.media_input(patches, MediaKind::Video { seconds_per_grid })?);
        }
        let (images, videos): (Vec<&MediaInput>, Vec<&MediaInput>) =
            inputs.iter().partition(|m| m.kind == MediaKind::Image);
        let text = placeholders::expand(text, IMAGE_PLACEHOLDER, images.len(), "image", |i| {
            IMAGE_PLACEHOLDER.repeat(self.tokens(images[i].grid_thw))
        })?;
        let text = placeholders::expand(&text, VIDEO_PLACEHOLDER, videos.len(), "video", |i| {
            VIDEO_PLACEHOLDER.repeat(self.tokens(videos[i].grid_thw))
        })?;
        let ids = self.tokenizer.encode(&text, add_special_tokens)?;
        Ok(Prepared { ids, media: inputs })
    }

    fn new_state(&self) -> DecodeState {
        DecodeState { cache: self.language_model.new_cache(), next_position: 0 }
    }

    fn prefill(&self, input: &Prepared, state: &mut DecodeState) -> Result<Tensor> {
        let (embeds, rotation, delta) = self.embed_prompt(input, state)?;
        let logits = self.language_model.forward(&embeds, &rotation, &mut state.cache)?;
        state.next_position += input.ids.len() as i64 + delta;
        Ok(logits.squeeze(0)?)
    }

    fn grounding_prompt(&self, phrase: &str) -> Option<String> {
        Some(match self.config.variant {
            // Qwen2-VL answers with <|object_ref_start|>..<|box_start|>(x1,y1),(x2,y2)<|box_end|>.
            Variant::Qwen2Vl => format!("Locate {phrase}."),
            // Qwen2.5-VL was taught to answer grounding questions in JSON (its cookbook's wording).
            Variant::Qwen25Vl => format!("Locate {phrase}, output its bbox coordinates using JSON format."),
        })
    }

    fn box_coords(&self, image: &MediaInput) -> Option<Coords> {
        let [_, h, w] = image.grid_thw;
        let p = self.config.vision.patch_size as u32;
        Some(match self.config.variant {
            Variant::Qwen2Vl => Coords::Grid1000,
            Variant::Qwen25Vl => Coords::Resized { width: w as u32 * p, height: h as u32 * p },
        })
    }

    fn decode(&self, token: u32, state: &mut DecodeState) -> Result<Tensor> {
        let embeds = self.language_model.embed(&Tensor::new(&[[token]], &self.device)?)?;
        let p = state.next_position;
        let logits = self.language_model.forward(&embeds, &self.rotation(&[[p; 3]])?, &mut state.cache)?;
        state.next_position += 1;
        Ok(logits.squeeze(0)?)
    }

    fn decode_batch(&self, tokens: &[u32], states: &mut [&mut DecodeState]) -> Result<Tensor> {
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(1)?;
        let embeds = self.language_model.embed(&ids)?;
        let rots = states.iter().map(|s| self.rotation(&[[s.next_position; 3]])).collect::<Result<Vec<_>>>()?;
        let mut caches: Vec<&mut KvCache> = states.iter_mut().map(|s| &mut s.cache).collect();
        let logits = self.language_model.decode_batch(&embeds, &rots, &mut caches)?;
        states.iter_mut().for_each(|s| s.next_position += 1);
        Ok(logits)
    }
}

impl Qwen2Vl {
    /// The 3-D position ids of a prepared prompt, and the delta later tokens add to their index.
    pub fn position_ids(&self, input: &Prepared) -> Result<(Vec<[i64; 3]>, i64)> {
        let (images, videos): (Vec<&MediaInput>, Vec<&MediaInput>) =
            input.media.iter().partition(|m| m.kind == MediaKind::Image);
        mrope_positions(&input.ids, &self.vision_spans(&input.ids, &images, &videos))
    }

    /// The media in the order their token runs appear in `ids`, with their merged grids.
    fn vision_spans(&self, ids: &[u32], images: &[&MediaInput], videos: &[&MediaInput]) -> Vec<VisionSpan> {
        let m = self.config.vision.merge_size;
        let (mut images, mut videos) = (images.iter(), videos.iter());
        let mut spans = Vec::new();
        let mut previous = None;
        for &t in ids {
            if Some(t) != previous {
                let next = if t == self.config.image_token_id {
                    images.next()
                } else if t == self.config.video_token_id {
                    videos.next()
                } else {
                    None
                };
                if let Some(media) = next {
                    let [gt, gh, gw] = media.grid_thw;
                    let time_interval = match (media.kind, self.config.tokens_per_second) {
                        (MediaKind::Video { seconds_per_grid }, Some(tps)) => tps as f32 * seconds_per_grid,
                        _ => 1.0,
                    };
                    spans.push(VisionSpan { token: t, grid: [gt, gh / m, gw / m], time_interval });
                }
            }
            previous = Some(t);
        }
        spans
    }
}
