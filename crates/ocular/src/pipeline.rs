//! The whole path in one place: a loaded model with its chat template and generation
//! defaults; conversation + images in, streamed text out. The CLI and the server use this.

use std::path::Path;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::generate::{
    FinishReason as StopReason, GenerationConfig, Sampler, SamplingParams, StopRules, StreamingText,
};
use crate::ground::Grounding;
use crate::load::{LoadOptions, ModelDir};
use crate::models::{self, Media, MediaKind, Prepared, VisionLanguageModel};
use crate::prompt::{ChatTemplate, Message};

pub struct Pipeline {
    pub model: Box<dyn VisionLanguageModel>,
    template: Option<ChatTemplate>,
    pub generation_config: GenerationConfig,
    eos_ids: Vec<u32>,
}

pub struct GenerateOptions {
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
}

pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub finish_reason: FinishReason,
    /// Seconds to the first new token (media encoding and prefill).
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

impl Generation {
    pub fn summary(&self) -> String {
        let rate =
            if self.decode_secs > 0.0 { (self.tokens.len().saturating_sub(1)) as f64 / self.decode_secs } else { 0.0 };
        format!(
            "{} prompt tokens, {} new tokens; first token after {:.2}s, then {:.1} tokens/s",
            self.prompt_tokens,
            self.tokens.len(),
            self.prefill_secs,
            rate
        )
    }
}

/// A folder's generation settings (transformers' defaults without generation_config.json) and
/// the ids that end generation: that file's EOS ids, else config.json's.
pub fn generation_settings(dir: &ModelDir) -> Result<(GenerationConfig, Vec<u32>)> {
    let generation_config = match dir.json("generation_config.json")? {
        Some(v) => serde_json::from_value(v).map_err(|e| Error::model_file(dir.path("generation_config.json"), e))?,
        None => GenerationConfig::default(),
    };
    let mut eos_ids = generation_config.eos_ids();
    if eos_ids.is_empty() {
        eos_ids = crate::generate::eos_ids_from_model_config(&dir.config()?);
    }
    Ok((generation_config, eos_ids))
}

impl Pipeline {
    pub fn load(dir: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let dir = ModelDir::open(dir)?;
        let model = models::load(&dir, opts)?;
        let template = dir.chat_template()?.map(ChatTemplate::new).transpose()?;
        let (generation_config, eos_ids) = generation_settings(&dir)?;
        Ok(Self { model, template, generation_config, eos_ids })
    }

    /// The sampling the model's generation_config.json asks for.
    pub fn default_sampling(&self, seed: u64) -> SamplingParams {
        SamplingParams::from_generation_config(&self.generation_config, seed)
    }

    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The conversation as prompt text, and whether tokenizing it should add special tokens:
    /// not when the template already wrote the BOS token (transformers' rule).
    pub fn render_chat(&self, messages: &[Message]) -> Result<(String, bool)> {
        let template = self.template.as_ref().ok_or_else(|| {
            Error::Template("the model folder has no chat template (chat_template.jinja, chat_template.json or tokenizer_config.json); use a raw prompt".into())
        })?;
        let tok = self.model.tokenizer();
        let text = template.render(messages, true, tok.bos_token.as_deref(), tok.eos_token.as_deref())?;
        let add_special = tok.adds_special_tokens_to(&text);
        Ok((text, add_special))
    }

    pub fn prepare_chat(&self, messages: &[Message], media: &Media) -> Result<Prepared> {
        let (text, add_special) = self.render_chat(messages)?;
        self.model.prepare(&text, media, add_special)
    }

    /// Text as the family's transformers processor tokenizes it, placeholders expanded.
    pub fn prepare_raw(&self, text: &str, media: &Media) -> Result<Prepared> {
        self.model.prepare(text, media, true)
    }

    /// The answer with special tokens kept: Qwen2-VL's box markers (`<|box_start|>` ...) are
    /// special tokens, which the streamed text leaves out.
    pub fn raw_text(&self, generation: &Generation) -> Result<String> {
        self.model.tokenizer().decode(&generation.tokens, false)
    }

    /// The boxes in `answer` (see [`Pipeline::raw_text`]), placed on the first image of `prepared` (`original` = its width
    /// and height). None when the model has no box convention or the prompt had no image.
    pub fn boxes(&self, answer: &str, prepared: &Prepared, original: (u32, u32)) -> Option<Grounding> {
        self.boxes_on(answer, prepared, 0, original)
    }

    /// [`Self::boxes`] placed on the prompt's image number `index` (from 0, in prompt order),
    /// whose original size is `original`.
    pub fn boxes_on(&self, answer: &str, prepared: &Prepared, index: usize, original: (u32, u32)) -> Option<Grounding> {
        let image = prepared.media.iter().filter(|m| m.kind == MediaKind::Image).nth(index)?;
        let coords = self.model.box_coords(image)?;
        Some(crate::ground::parse(answer, coords, original))
    }

    pub fn last_logits(&self, prepared: &Prepared) -> Result<Vec<f32>> {
        let mut state = self.model.new_state();
        Ok(self.model.prefill(prepared, &mut state)?.to_vec1::<f32>()?)
    }

    /// Generate an answer, calling `on_text` with each piece of text as soon as it is final.
    pub fn generate(
        &self,
        prepared: &Prepared,
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let mut session = self.start(prepared, opts)?;
        while let Some(text) = session.step()? {
            on_text(&text);
        }
        Ok(session.finish())
    }

    /// Advances each session by one token (see [`Session::step`]); the model reads the new
    /// tokens of all of them in one batched decode step.
    pub fn step_all(&self, sessions: &mut [&mut Session<'_>]) -> Vec<Result<Option<String>>> {
        let mut results: Vec<Result<Option<String>>> = Vec::with_capacity(sessions.len());
        let mut feeding = Vec::new();
        for (i, s) in sessions.iter_mut().enumerate() {
            results.push(match s.sample() {
                Ok(None) => Ok(None),
                Ok(Some((text, feed))) => {
                    feeding.extend(feed.map(|t| (i, t)));
                    Ok(Some(text))
                }
                Err(e) => Err(e),
            });
        }
        if feeding.is_empty() {
            return results;
        }
        let tokens: Vec<u32> = feeding.iter().map(|&(_, t)| t).collect();
        let mut states: Vec<&mut models::DecodeState> = sessions
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| feeding.iter().any(|(j, _)| j == i))
            .map(|(_, s)| &mut s.state)
            .collect();
        let logits = self.model.decode_batch(&tokens, &mut states).and_then(|l| Ok(l.to_vec2::<f32>()?));
        match logits {
            Ok(rows) => {
                for ((i, _), row) in feeding.iter().zip(rows) {
                    sessions[*i].logits = row;
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (i, _) in &feeding {
                    results[*i] = Err(Error::Invalid(format!("decode step failed: {message}")));
                }
            }
        }
        results
    }

    /// Encodes the media and prefills the prompt; [`Session::step`] then yields the answer a
    /// piece at a time. The server keeps many sessions and advances each in turn.
    pub fn start(&self, prepared: &Prepared, opts: &GenerateOptions) -> Result<Session<'_>> {
        let start = Instant::now();
        let mut state = self.model.new_state();
        let logits = self.model.prefill(prepared, &mut state)?.to_vec1::<f32>()?;
        let rules =
            StopRules::new(self.eos_ids.clone(), opts.max_new_tokens).with_stop_strings(opts.stop.iter().cloned());
        Ok(Session {
            pipeline: self,
            state,
            logits,
            sampler: Sampler::new(opts.sampling.clone()),
            stream: StreamingText::new(self.model.tokenizer().inner(), rules, true),
            // The repetition penalty looks at the prompt too, as in transformers.
            context: prepared.ids.clone(),
            tokens: Vec::new(),
            prompt_tokens: prepared.ids.len(),
            prefill_secs: start.elapsed().as_secs_f64(),
            decode_start: Instant::now(),
            finish: None,
        })
    }
}

/// One generation in progress (see [`Pipeline::start`]).
pub struct Session<'p> {
    pipeline: &'p Pipeline,
    state: models::DecodeState,
    /// The logits the next token is sampled from.
    logits: Vec<f32>,
    sampler: Sampler,
    stream: StreamingText<'p>,
    context: Vec<u32>,
    tokens: Vec<u32>,
    prompt_tokens: usize,
    prefill_secs: f64,
    decode_start: Instant,
    finish: Option<FinishReason>,
}

impl Session<'_> {
    /// Samples the next token: the text that became final with it (possibly empty), or None
    /// once the generation has ended.
    pub fn step(&mut self) -> Result<Option<String>> {
        let pipeline = self.pipeline;
        pipeline.step_all(&mut [self]).pop().unwrap_or(Ok(None))
    }

    /// Samples a token; returns its text and whether the model must now read it.
    fn sample(&mut self) -> Result<Option<(String, Option<u32>)>> {
        if self.finish.is_some() {
            return Ok(None);
        }
        if let Some(reason) = self.stream.finished() {
            self.finish = Some(finish_reason(reason));
            return Ok(None);
        }
        let token = self.sampler.sample(&self.logits, &self.context);
        let step = self.stream.push(token)?;
        if step.finish != Some(StopReason::Eos) {
            self.tokens.push(token);
        }
        self.context.push(token);
        let feed = match &step.finish {
            Some(reason) => {
                self.finish = Some(finish_reason(reason));
                None
            }
            None => Some(token),
        };
        Ok(Some((step.text, feed)))
    }

    /// Tokens generated so far (EOS excluded).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Seconds the media encoding and prefill took.
    pub fn prefill_secs(&self) -> f64 {
        self.prefill_secs
    }

    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Seconds since the first token was sampled.
    pub fn decode_secs(&self) -> f64 {
        self.decode_start.elapsed().as_secs_f64()
    }

    /// The generation so far; a session stopped early (cancelled) reports `Length`.
    pub fn finish(self) -> Generation {
        Generation {
            text: self.stream.text().to_string(),
            tokens: self.tokens,
            prompt_tokens: self.prompt_tokens,
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
            prefill_secs: self.prefill_secs,
            decode_secs: self.decode_start.elapsed().as_secs_f64(),
        }
    }
}

fn finish_reason(reason: &StopReason) -> FinishReason {
    match reason {
        StopReason::MaxTokens => FinishReason::Length,
        StopReason::Eos | StopReason::StopString(_) => FinishReason::Stop,
    }
}
