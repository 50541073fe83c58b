//! `ocular train --config FILE.toml`: what to train, on what, for how long. Every field has a
//! default, so a config states only what differs; the one that made the built-in model is
//! committed as `configs/builtin.toml`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::conversations::ConversationsConfig;
use super::dense::DenseLabels;
use super::optim::Schedule;
use super::scenes::SceneConfig;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Where the finished model folder goes; checkpoints go to `OUT/checkpoint`.
    pub out: PathBuf,
    /// Fine-tune this model folder instead of training a new one from scratch.
    pub base: Option<PathBuf>,
    pub seed: u64,
    pub model: ModelShape,
    pub data: SceneConfig,
    pub optim: Optim,
    pub dense: Dense,
    /// The user's own conversations to fine-tune `base` on, instead of the scenes.
    pub conversations: ConversationsConfig,
}

/// Dense supervision of the vision tower (see `train::dense`): a throwaway head on every merged
/// vision token learns the colour of the object under it and, at each object's centre token,
/// its shape. Questions alone teach a small from-scratch vision tower shape far too slowly.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dense {
    /// Steps that train only the vision tower on the dense labels, before the first question.
    pub warmup_steps: usize,
    /// Scenes per warm-up step.
    pub warmup_batch_size: usize,
    /// Scenes per question step, when `weight` > 0 (fewer: the answers carry most of the step).
    pub batch_size: usize,
    /// Learning rate of the dense-only steps, after a short linear ramp.
    pub lr: f64,
    /// Where the warm-up's learning rate ends, as a fraction of `lr`, reached by a cosine
    /// (1: constant, as the first runs had it).
    pub min_lr_ratio: f64,
    /// How many of the warm-up's last steps the cosine spans (0: all after the ramp); before
    /// them the learning rate stays at `lr`.
    pub decay_steps: usize,
    /// Weight of the dense loss added to the answer loss on question steps (0: none).
    pub weight: f64,
    /// Also label where objects are: "no centre" at tokens without an object's centre, size
    /// at centre tokens, and a centre token's colour even for a small object (see
    /// `train::dense`).
    pub centres: bool,
    /// Label shape and size at every token an object covers, not only at its centre token
    /// (see `train::dense`; not with `centres`).
    pub covered: bool,
    /// Also label, wherever an object's shape is labelled, the colour and shape of the object
    /// standing in each relation to it (left of, right of, above, below, nearest, farthest).
    pub relations: bool,
    /// Also label the number of objects at every token and, wherever an object's shape is
    /// labelled, how many objects share its shape and how many its colour.
    pub counts: bool,
    /// With `relations`: also label "none" where no object clearly stands in a relation
    /// (questions are asked only where one does). On by default, as the first runs had it.
    pub relations_none: bool,
    /// Also label at every token what the whole image holds: how many objects of each shape
    /// and of each colour, and whether each colour-shape pair is present.
    pub inventory: bool,
    /// Also label, wherever an object's shape is labelled, its place in the caption's order
    /// (left to right) and the colour and shape of the object after it.
    pub order: bool,
    /// Also label, wherever an object's shape is labelled, the tenth of the image's width and
    /// height holding each edge of the object's box (the first digit of a grounding answer's
    /// 0-1000 coordinates), with a head of its own (`box_head.safetensors` in checkpoints), so
    /// that a finished warm-up can be resumed with it added.
    pub boxes: bool,
    /// Moving-object clips per dense step, besides the scenes: their tokens learn their colour
    /// and the direction of motion (or "still") of the object under them.
    pub videos: usize,
}

/// The shape of a new Qwen2-VL-architecture model (ignored when fine-tuning).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelShape {
    pub vocab_size: usize,
    pub vision_depth: usize,
    pub vision_width: usize,
    pub vision_heads: usize,
    /// MLP width over attention width (an integer: transformers' config requires one).
    pub vision_mlp_ratio: usize,
    /// Pixels per side of a vision patch (14 in Qwen2-VL; smaller sees finer shapes, at the
    /// cost of four times the tokens per halving).
    pub vision_patch_size: usize,
    pub text_layers: usize,
    pub text_hidden: usize,
    pub text_heads: usize,
    pub text_kv_heads: usize,
    pub text_intermediate: usize,
    pub rope_theta: f64,
    /// M-RoPE's frequency pairs of each text head for time, height and width, highest
    /// frequencies first (summing to head_dim / 2). Unset: Qwen2-VL's proportions (16/24/24
    /// of 64), which leave width the lowest frequencies.
    pub mrope_section: Option<[usize; 3]>,
    /// Write a chat template that puts a user's text before its images and videos (Qwen2-VL's
    /// puts them first): every vision token then sees the question.
    pub text_before_media: bool,
    /// Train the tokenizer with every digit a token of its own (as Qwen2's), so a box's
    /// coordinates are always spelled the same way; off, BPE merges digit groups.
    pub split_digits: bool,
    /// Images are resized to within these many pixels (multiples of (2 x patch size) squared).
    pub min_pixels: u64,
    pub max_pixels: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Optim {
    pub steps: usize,
    /// Images (or image pairs, or videos) per optimiser step.
    pub batch_size: usize,
    /// Questions asked about each image; their answers share one pass over the image.
    pub questions_per_image: usize,
    pub lr: f64,
    /// The cosine schedule ends at `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Gradients are scaled down to this global norm when larger.
    pub grad_clip: f64,
    /// Held-out loss every this many steps (0: never).
    pub eval_every: usize,
    pub eval_examples: usize,
    /// A resumable checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// The vision tower's and merger's learning rate on question steps, relative to `lr`:
    /// below 1 keeps what a `[dense]` warm-up taught them from being overwritten by the first
    /// answers' large gradients; 0 freezes them (and skips their backward pass).
    pub vision_lr_scale: f64,
    /// How the answers' cross-entropy is averaged over a batch.
    pub loss_weighting: LossWeighting,
    /// With `k` > 0, a throwaway head on the language model's stream after its first `k`
    /// layers learns where each image token lies (see `train::position`), weighted
    /// `position_weight` against the answers; 0: none.
    pub position_layer: usize,
    pub position_weight: f64,
    /// With `k` > 0, a throwaway head on the language model's stream after its first `k`
    /// layers learns, at each image's end token, what the image holds (see
    /// `train::inventory`), weighted `inventory_weight` against the answers; 0: none.
    pub inventory_layer: usize,
    pub inventory_weight: f64,
    /// With `k` > 0, head `pointer_head` of the language model's layer after its first `k`
    /// learns to look at the object a grounding answer boxes (see `train::pointer`), weighted
    /// `pointer_weight` against the answers; 0: none.
    pub pointer_layer: usize,
    pub pointer_head: usize,
    pub pointer_weight: f64,
    /// With a `pointer_layer`, also every one-image answer about objects (attributes, counts,
    /// relations), at every answer row, learns to look at them.
    pub pointer_objects: bool,
    /// With `pointer_objects`, also every answer about objects the scene lacks (yes/no "no", a
    /// count of 0) learns to look at the image's `<|vision_start|>` token.
    pub pointer_absent: bool,
    /// With `pointer_objects` and an `inventory_layer`, count and existence answers (present
    /// or not) look at the image's `<|vision_end|>` token instead, where the inventory head
    /// teaches the image's tally (see `train::inventory`).
    pub pointer_tally: bool,
    /// With `k` > 0, a throwaway head on the language model's stream after its first `k`
    /// layers learns, at every image token an answer's object covers, the first two digits of
    /// each edge of that object's 0-1000 box (see `train::object_box`), weighted `box_weight`
    /// against the answers; 0: none.
    pub box_layer: usize,
    pub box_weight: f64,
}

/// Whether every answer token or every answer weighs the same in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossWeighting {
    /// The mean over all answer tokens: a 25-token caption or box outweighs a one-word colour
    /// 25 to 1.
    #[default]
    Token,
    /// The mean over answers of each answer's mean token loss: every question counts the same,
    /// whatever its answer's length.
    Answer,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            out: PathBuf::from("trained-model"),
            base: None,
            seed: 0,
            model: ModelShape::default(),
            data: SceneConfig::default(),
            optim: Optim::default(),
            dense: Dense::default(),
            conversations: ConversationsConfig::default(),
        }
    }
}

impl Default for ModelShape {
    fn default() -> Self {
        Self {
            vocab_size: 1024,
            vision_depth: 4,
            vision_width: 128,
            vision_heads: 4,
            vision_mlp_ratio: 2,
            vision_patch_size: 14,
            text_layers: 4,
            text_hidden: 256,
            text_heads: 4,
            text_kv_heads: 2,
            text_intermediate: 768,
            rope_theta: 10_000.0,
            mrope_section: None,
            text_before_media: false,
            split_digits: false,
            min_pixels: 56 * 56,
            max_pixels: 224 * 224,
        }
    }
}

impl Default for Optim {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 8,
            questions_per_image: 4,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 50,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            eval_every: 100,
            eval_examples: 32,
            checkpoint_every: 200,
            vision_lr_scale: 1.0,
            loss_weighting: LossWeighting::Token,
            position_layer: 0,
            position_weight: 1.0,
            inventory_layer: 0,
            inventory_weight: 1.0,
            pointer_layer: 0,
            pointer_head: 0,
            pointer_weight: 1.0,
            pointer_objects: false,
            pointer_absent: false,
            pointer_tally: false,
            box_layer: 0,
            box_weight: 1.0,
        }
    }
}

impl Default for Dense {
    fn default() -> Self {
        Self {
            warmup_steps: 0,
            warmup_batch_size: 16,
            batch_size: 4,
            lr: 1e-3,
            min_lr_ratio: 1.0,
            decay_steps: 0,
            weight: 0.0,
            centres: false,
            covered: false,
            relations: false,
            counts: false,
            relations_none: true,
            inventory: false,
            order: false,
            boxes: false,
            videos: 0,
        }
    }
}

impl Dense {
    /// The warm-up's learning rate: a 50-step ramp, then constant, then (over the last
    /// `decay_steps`, or all) cosine.
    pub fn schedule(&self) -> Schedule {
        let ramp = 50;
        let decay_from = if self.decay_steps == 0 { ramp } else { self.warmup_steps.saturating_sub(self.decay_steps) };
        Schedule { lr: self.lr, ramp, decay_from, steps: self.warmup_steps, min_lr_ratio: self.min_lr_ratio }
    }

    /// Whether any step uses the dense head.
    pub fn enabled(&self) -> bool {
        self.warmup_steps > 0 || self.weight > 0.0
    }

    /// What the dense head labels besides colour.
    pub fn labels(&self) -> DenseLabels {
        match (self.centres, self.covered) {
            (true, _) => DenseLabels::Centres,
            (false, true) => DenseLabels::Covered,
            (false, false) => DenseLabels::Centre,
        }
    }
}

/// toml's own message spans several lines (a source excerpt with a caret); users get one:
/// the line it points at and what is wrong there, e.g. "line 92: unknown field `x`, expected ...".
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim();
    match e.span() {
        Some(span) => format!(
            "line {}: {what}",
            1 + text.as_bytes()[..span.start.min(text.len())].iter().filter(|&&b| b == b'\n').count()
        ),
        None => what.to_string(),
    }
}

impl TrainConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::model_file(path, e))?;
        let config: Self =
            toml::from_str(&text).map_err(|e| Error::Config { path: path.into(), message: toml_message(&text, &e) })?;
        config.validate().map_err(|message| Error::Config { path: path.into(), message })?;
        Ok(config)
    }

    /// The first setting that asks for an auxiliary head or the dense warm-up, which read
    /// Qwen2-VL's merged vision grid (None when the run asks for none).
    pub fn first_head_setting(&self) -> Option<&'static str> {
        let (o, d) = (&self.optim, &self.dense);
        [
            ("dense.warmup_steps", d.warmup_steps > 0),
            ("dense.weight", d.weight > 0.0),
            ("optim.position_layer", o.position_layer > 0),
            ("optim.inventory_layer", o.inventory_layer > 0),
            ("optim.pointer_layer", o.pointer_layer > 0),
            ("optim.box_layer", o.box_layer > 0),
        ]
        .into_iter()
        .find_map(|(name, asked)| asked.then_some(name))
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let m = &self.model;
        let o = &self.optim;
        if o.steps == 0 || o.batch_size == 0 {
            return Err("optim.steps and optim.batch_size must be at least 1".into());
        }
        if !(o.lr > 0.0) || !(o.grad_clip > 0.0) {
            return Err("optim.lr and optim.grad_clip must be positive".into());
        }
        if !(o.vision_lr_scale >= 0.0) {
            return Err(format!("optim.vision_lr_scale {} must be 0 or more", o.vision_lr_scale));
        }
        let aux = [
            ("position_weight", o.position_weight),
            ("inventory_weight", o.inventory_weight),
            ("pointer_weight", o.pointer_weight),
            ("box_weight", o.box_weight),
        ];
        if let Some((name, w)) = aux.iter().find(|(_, w)| !(*w >= 0.0)) {
            return Err(format!("optim.{name} {w} must be 0 or more"));
        }
        let head_dim = m.text_hidden / m.text_heads.max(1);
        if m.text_heads == 0 || m.text_hidden % m.text_heads != 0 || head_dim % 4 != 0 {
            return Err(format!(
                "model.text_hidden {} must split into text_heads {} heads of a multiple of 4",
                m.text_hidden, m.text_heads
            ));
        }
        if let Some(section) = m.mrope_section.filter(|s| s.iter().sum::<usize>() != head_dim / 2) {
            return Err(format!(
                "model.mrope_section {section:?} must sum to head_dim / 2 = {} (text_hidden {} / text_heads {} / 2)",
                head_dim / 2,
                m.text_hidden,
                m.text_heads
            ));
        }
        let d = &self.dense;
        if d.enabled() && (d.batch_size == 0 || d.warmup_batch_size == 0 || !(d.lr > 0.0) || !(d.weight >= 0.0)) {
            return Err(format!(
                "dense.batch_size {} and dense.warmup_batch_size {} must be at least 1, dense.lr {} positive and dense.weight {} not negative",
                d.batch_size, d.warmup_batch_size, d.lr, d.weight
            ));
        }
        if !(0.0..=1.0).contains(&d.min_lr_ratio) {
            return Err(format!("dense.min_lr_ratio {} must be between 0 and 1", d.min_lr_ratio));
        }
        if d.decay_steps > d.warmup_steps {
            return Err(format!(
                "dense.decay_steps {} is more than dense.warmup_steps {}",
                d.decay_steps, d.warmup_steps
            ));
        }
        if d.centres && d.covered {
            return Err(
                "dense.centres and dense.covered label shape differently at non-centre tokens: set one of them".into(),
            );
        }
        if d.weight > 0.0 && o.vision_lr_scale == 0.0 {
            return Err(format!(
                "dense.weight {} does nothing with optim.vision_lr_scale 0 (the vision tower is frozen on question steps): set one of them",
                d.weight
            ));
        }
        // Each refines the pointer loss before it, and alone would silently do nothing.
        for (name, set, needs, has) in [
            ("pointer_objects", o.pointer_objects, "pointer_layer", o.pointer_layer > 0),
            ("pointer_absent", o.pointer_absent, "pointer_objects", o.pointer_objects),
            ("pointer_tally", o.pointer_tally, "pointer_objects", o.pointer_objects),
            ("pointer_tally", o.pointer_tally, "inventory_layer", o.inventory_layer > 0),
        ] {
            if set && !has {
                return Err(format!("optim.{name} needs optim.{needs}, which it extends"));
            }
        }
        self.conversations.validate(self.base.is_some(), self.first_head_setting())?;
        if m.vision_patch_size < 2 {
            return Err(format!("model.vision_patch_size {} must be at least 2", m.vision_patch_size));
        }
        if m.vocab_size < 300 {
            return Err(format!(
                "model.vocab_size {} is too small: the byte alphabet and special tokens alone take 270",
                m.vocab_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
