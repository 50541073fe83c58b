//! LLaVA (Liu et al. 2023): CLIP ViT features of an inner layer, projected into Llama's
//! embedding space, replace the `<image>` tokens of the prompt. Follows transformers'
//! `modeling_llava.py`.

pub mod config;
pub mod processor;

use candle_core::{DType, Device, Module, Tensor};

use self::config::{LlavaConfig, SelectStrategy};
use self::processor::LlavaProcessor;
use super::splice::splice;
use super::{DecodeState, Media, MediaInput, MediaKind, ModelInfo, Prepared, VisionLanguageModel};
use crate::connect::Projector;
use crate::error::{Error, Result};
use crate::load::{LoadOptions, ModelDir, WeightIndex};
use crate::prompt::{placeholders, TextTokenizer};
use crate::text::{CausalDecoder, Head, KvCache, RotaryEmbedding, Rotation};
use crate::vision::ClipVisionTower;

const IMAGE_PLACEHOLDER: &str = "<image>";

/// Where each part's weights live. Checkpoints name them three ways: transformers 5 nests
/// everything under `model.`, Hub checkpoints of the 4.x era put the language model under
/// `language_model.model.` and CLIP under `vision_tower.vision_model.`, and 5.24's
/// `save_pretrained` writes a mix (`language_model.model.`, `vision_tower.` without
/// `vision_model.`). Each prefix is found by a tensor that must be there.
pub struct Layout {
    text: &'static str,
    head: &'static str,
    vision: &'static str,
    projector: &'static str,
}

impl Layout {
    fn detect(index: &WeightIndex, dir: &ModelDir) -> Result<Self> {
        let find = |what: &str, candidates: &[&'static str], suffix: &str| {
            candidates.iter().copied().find(|p| index.contains(&format!("{p}.{suffix}"))).ok_or_else(|| {
                Error::Weights {
                    dir: dir.root().to_path_buf(),
                    message: format!(
                        "cannot find the {what}: expected one of {}",
                        candidates.iter().map(|p| format!("{p}.{suffix}")).collect::<Vec<_>>().join(", ")
                    ),
                }
            })
        };
        let text = find(
            "language model's embeddings",
            &["model.language_model", "language_model.model"],
            "embed_tokens.weight",
        )?;
        let vision = find(
            "vision tower's class embedding",
            &["model.vision_tower.vision_model", "model.vision_tower", "vision_tower.vision_model", "vision_tower"],
            "embeddings.class_embedding",
        )?;
        let projector =
            find("projector", &["model.multi_modal_projector", "multi_modal_projector"], "linear_1.weight")?;
        let head = if text.starts_with("model.") { "lm_head" } else { "language_model.lm_head" };
        Ok(Self { text, head, vision, projector })
    }
}

pub struct Llava {
    config: LlavaConfig,
    processor: LlavaProcessor,
    tokenizer: TextTokenizer,
    vision_tower: ClipVisionTower,
    feature_layers: Vec<usize>,
    multi_modal_projector: Projector,
    language_model: CausalDecoder,
    rotary: RotaryEmbedding,
    info: ModelInfo,
    dtype: DType,
    device: Device,
    /// Where the vision tower's weights are named (see [`Layout`]).
    vision_prefix: &'static str,
}

impl Llava {
    pub fn load(dir: &ModelDir, config: serde_json::Value, opts: &LoadOptions) -> Result<Self> {
        let index = WeightIndex::read(dir.weight_files()?)?;
        let vb = index.var_builder(opts.precision.dtype(), &opts.device, opts.progress.clone())?;
        let (mut model, layout) = Self::on_weights(dir, config, &index, vb)?;
        let tied = model.config.tie_word_embeddings();
        model.info.parameters = vec![
            ("vision tower", index.count_params(layout.vision)),
            ("projector", index.count_params(layout.projector)),
            (
                "language model",
                index.count_params(layout.text) + if tied { 0 } else { index.count_params(layout.head) },
            ),
        ];
        Ok(model)
    }

    /// The model of folder `dir` (its `config`, tokenizer and processor) on `vb`'s weights,
    /// named as in `index` (a checkpoint's, or a `VarMap`'s when training).
    pub fn on_weights(
        dir: &ModelDir,
        config: serde_json::Value,
        index: &WeightIndex,
        vb: candle_nn::VarBuilder,
    ) -> Result<(Self, Layout)> {
        let config_path = dir.path("config.json");
        let bad_config = |message: String| Error::Config { path: config_path.clone(), message };
        let config: LlavaConfig = serde_json::from_value(config).map_err(|e| bad_config(e.to_string()))?;
        config.validate().map_err(bad_config)?;
        let text_type = config.text_config_model_type();
        if text_type != "llama" {
            return Err(bad_config(format!(
                "text_config.model_type {text_type:?} is not supported for LLaVA yet; supported: llama"
            )));
        }
        config.feature_layers().map_err(bad_config)?;
        config.text_config.rotary().map_err(bad_config)?;
        let tokenizer = TextTokenizer::load(dir)?;
        let processor = LlavaProcessor::load(dir)?;
        let layout = Layout::detect(index, dir)?;
        let model =
            Self::build(config, processor, tokenizer, vb, &layout).map_err(|e| Error::weights(dir.root(), &e))?;
        Ok((model, layout))
    }

    /// The model on `vb`'s weights, named as `layout` says; `config` has been validated.
    fn build(
        config: LlavaConfig,
        processor: LlavaProcessor,
        tokenizer: TextTokenizer,
        vb: candle_nn::VarBuilder,
        layout: &Layout,
    ) -> candle_core::Result<Self> {
        let feature_layers = config.feature_layers().map_err(candle_core::Error::Msg)?;
        let rotary = config.text_config.rotary().map_err(candle_core::Error::Msg)?;
        let vc = &config.vision_config;
        let depth = feature_layers.iter().copied().max().unwrap_or(0);
        let vision_tower = ClipVisionTower::load(vc, depth, vb.pp(layout.vision))?;
        let multi_modal_projector = Projector::load(
            config.mm_projector_type,
            vc.hidden_size * feature_layers.len(),
            config.text_config.hidden_size,
            config.projector_hidden_act,
            config.multimodal_projector_bias,
            vb.pp(layout.projector),
        )?;
        let head = if config.tie_word_embeddings() { Head::Tied } else { Head::Own(vb.pp(layout.head)) };
        let language_model = CausalDecoder::load(config.text_config.decoder_spec(), vb.pp(layout.text), head)?;
        let info = ModelInfo {
            family: "llava",
            model_type: "llava".into(),
            parameters: vec![],
            dtype: vb.dtype(),
            device: format!("{:?}", vb.device()),
        };
        Ok(Self {
            config,
            processor,
            tokenizer,
            vision_tower,
            feature_layers,
            multi_modal_projector,
            language_model,
            rotary,
            info,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            vision_prefix: layout.vision,
        })
    }

    pub fn processor(&self) -> &LlavaProcessor {
        &self.processor
    }

    /// Feature vectors one image yields: one per patch, plus CLS under the `full` strategy.
    fn tokens_per_image(&self, height: usize, width: usize) -> usize {
        let p = self.config.vision_config.patch_size;
        let cls = usize::from(self.config.vision_feature_select_strategy == SelectStrategy::Full);
        (height / p) * (width / p) + cls
    }

    /// pixels (images, 3, H, W) -> (images, tokens, text hidden). Without `tower_grad` the
    /// vision tower's features are cut from the autograd graph (the projector stays in it).
    fn encode_images(&self, pixels: &Tensor, tower_grad: bool) -> Result<Tensor> {
        let states = self.vision_tower.hidden_states(&pixels.to_dtype(self.dtype)?, &self.feature_layers)?;
        let selected = states
            .iter()
            .map(|s| match self.config.vision_feature_select_strategy {
                SelectStrategy::Default => s.narrow(1, 1, s.dim(1)? - 1),
                SelectStrategy::Full => Ok(s.clone()),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let features = Tensor::cat(&selected, 2)?; // (images, tokens, vision hidden * layers)
        let features = if tower_grad { features } else { features.detach() };
        Ok(self.multi_modal_projector.forward(&features)?)
    }

    /// Token embeddings (1, seq, hidden) with each `<image>` token replaced by its image's
    /// projected features.
    fn embed_tokens_and_images(&self, input: &Prepared, tower_grad: bool) -> Result<Tensor> {
        if input.ids.is_empty() {
            return Err(Error::Invalid("the prompt is empty: no tokens to run".into()));
        }
        let mut media = Vec::new();
        if !input.media.is_empty() {
            let pixels = Tensor::stack(&input.media.iter().map(|m| &m.pixels).collect::<Vec<_>>(), 0)?;
            // (images, tokens, hidden) -> (images * tokens, hidden)
            media.push((self.config.image_token_index, self.encode_images(&pixels, tower_grad)?.flatten_to(1)?));
        }
        let text = self.language_model.embed(&Tensor::new(input.ids.as_slice(), &self.device)?)?;
        splice(&text, &input.ids, &media, &self.device)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The token that stands for image features in a prepared prompt.
    pub fn image_token_id(&self) -> u32 {
        self.config.image_token_index
    }

    /// Whether a weight's name is the vision tower's (not the projector's).
    pub fn is_vision_tower(&self, name: &str) -> bool {
        name.strip_prefix(self.vision_prefix).is_some_and(|rest| rest.starts_with('.'))
    }

    /// Training: f32 logits (rows, vocab) at `rows` of a packed sequence, each predicting the
    /// token after it, with the caller's rotary `positions` and (seq, seq) additive `mask`
    /// (see `train::batch`); and each `taps` layer's output stream (seq, hidden). Without
    /// `train_vision` backward skips the vision tower (the projector still learns).
    pub fn logits_packed_tapped(
        &self,
        input: &Prepared,
        positions: &[i64],
        mask: &Tensor,
        rows: &[u32],
        train_vision: bool,
        taps: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let embeds = self.embed_tokens_and_images(input, train_vision)?;
        let (cos, sin) = self.rotary.cos_sin(positions, self.dtype, &self.device)?;
        let (hidden, tapped) = self.language_model.hidden_states_masked(&embeds, &Rotation { cos, sin }, mask, taps)?;
        let rows = hidden.squeeze(0)?.index_select(&Tensor::new(rows, &self.device)?, 0)?;
        let tapped = tapped.into_iter().map(|t| t.squeeze(0)).collect::<candle_core::Result<_>>()?;
        Ok((self.language_model.logits(&rows)?, tapped))
    }

    fn rotation(&self, start: i64, len: usize) -> Result<Rotation> {
        let positions: Vec<i64> = (start..start + len as i64).collect();
        let (cos, sin) = self.rotary.cos_sin(&positions, self.dtype, &self.device)?;
        Ok(Rotation { cos, sin })
    }
}

impl VisionLanguageModel for Llava {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn image_placeholder(&self) -> &str {
        IMAGE_PLACEHOLDER
    }

    fn takes_video(&self) -> bool {
        false
    }

    fn prepare(&self, text: &str, media: &Media, add_special_tokens: bool) -> Result<Prepared> {
        if !media.videos.is_empty() {
            return Err(Error::Invalid("LLaVA takes images only; this model cannot watch videos".into()));
        }
        let media = media
            .images
            .iter()
            .map(|img| {
                let pixels = self.processor.pixel_values(img, &self.device)?;
                let (_, h, w) = pixels.dims3()?;
                let p = self.config.vision_config.patch_size;
                let expected = self.config.vision_config.image_size;
                if h != expected || w != expected {
                    return Err(Error::Invalid(format!(
                        "the image processor yields {h}x{w} pixels but the vision tower takes {expected}x{expected} (check crop_size in the processor config)"
                    )));
                }
                Ok(MediaInput { pixels, grid_thw: [1, h / p, w / p], kind: MediaKind::Image })
            })
            .collect::<Result<Vec<_>>>()?;
        let expanded = placeholders::expand(text, IMAGE_PLACEHOLDER, media.len(), "image", |i| {
            let [_, gh, gw] = media[i].grid_thw;
            let p = self.config.vision_config.patch_size;
            IMAGE_PLACEHOLDER.repeat(self.tokens_per_image(gh * p, gw * p))
        })?;
        let ids = self.tokenizer.encode(&expanded, add_special_tokens)?;
        Ok(Prepared { ids, media })
    }

    fn new_state(&self) -> DecodeState {
        DecodeState { cache: self.language_model.new_cache(), next_position: 0 }
    }

    fn prefill(&self, input: &Prepared, state: &mut DecodeState) -> Result<Tensor> {
        let embeds = self.embed_tokens_and_images(input, false)?;
        let rot = self.rotation(state.next_position, input.ids.len())?;
        let logits = self.language_model.forward(&embeds, &rot, &mut state.cache)?;
        state.next_position += input.ids.len() as i64;
        Ok(logits.squeeze(0)?)
    }

    fn decode(&self, token: u32, state: &mut DecodeState) -> Result<Tensor> {
        let embeds = self.language_model.embed(&Tensor::new(&[[token]], &self.device)?)?;
        let rot = self.rotation(state.next_position, 1)?;
        let logits = self.language_model.forward(&embeds, &rot, &mut state.cache)?;
        state.next_position += 1;
        Ok(logits.squeeze(0)?)
    }

    fn decode_batch(&self, tokens: &[u32], states: &mut [&mut DecodeState]) -> Result<Tensor> {
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(1)?;
        let embeds = self.language_model.embed(&ids)?;
        let rots = states.iter().map(|s| self.rotation(s.next_position, 1)).collect::<Result<Vec<_>>>()?;
        let mut caches: Vec<&mut KvCache> = states.iter_mut().map(|s| &mut s.cache).collect();
        let logits = self.language_model.decode_batch(&embeds, &rots, &mut caches)?;
        states.iter_mut().for_each(|s| s.next_position += 1);
        Ok(logits)
    }
}
