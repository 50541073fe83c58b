//! The training loop: scene examples drawn from (seed, step) so a run is deterministic and can
//! resume anywhere; loss on answer tokens only; AdamW with warm-up, cosine decay and clipping;
//! held-out loss now and then; resumable checkpoints; a standard model folder at the end.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};

use super::batch::{conversation_sample, sample, Chat, Sample};
use super::config::{LossWeighting, TrainConfig};
use super::conversations::{Conversations, Dataset, Entry};
use super::dense::{self, DenseItem};
use super::folder;
use super::heads::Heads;
#[cfg(test)]
use super::heads::{BOX_HEAD_FILE, DENSE_HEAD_FILE};
use super::model::{self, TrainModel};
use super::optim::{learning_rate, AdamW};
use super::parallel::{self, Part};
use super::progress::eta_secs;
pub use super::progress::{DenseParts, Progress, Rate};
use super::question_aux::{QuestionAux, AUX_LOSSES};
use super::scenes::Generator;
use super::weights::{init_weights, load_into, save_model};
use crate::error::{Error, Result};
use crate::load::ModelDir;

/// Examples of step `step` are drawn from their own generator, so any step can be redone.
fn generator(config: &TrainConfig, step: u64) -> Generator {
    Generator::new(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(step), config.data.clone())
}

pub struct Trainer {
    config: TrainConfig,
    model: Box<dyn TrainModel>,
    varmap: VarMap,
    chat: Chat,
    /// The user's conversations (`[conversations]`), learnt from instead of the scenes.
    dataset: Option<Dataset>,
    /// A fine-tuned base's weight files: the finished folder keeps those of its tensors the
    /// model does not use (a CLIP tower's layers past the one LLaVA reads).
    base_files: Vec<PathBuf>,
    optimizer: AdamW,
    /// The throwaway heads beside the model, which the saved model leaves out.
    heads: Heads,
    /// Every trained tensor, whose gradients a step sums over its items.
    vars: Vec<Tensor>,
    /// Threads that share a step's items; `None`: one item after another.
    pool: Option<rayon::ThreadPool>,
    out: PathBuf,
}

/// What a step learns from: a packed sample of questions, or a scene or clip for the dense head.
enum Item<'a> {
    Sample(&'a Sample),
    Dense(&'a DenseItem),
}

impl Trainer {
    /// Builds the model (a new one, whose files are written to `config.out`, or the base's,
    /// whose files are copied there once the run's settings are found to suit it); with
    /// `resume`, continues from the checkpoint there.
    pub fn new(config: TrainConfig, resume: bool) -> Result<Self> {
        // (Checked here too for library callers; from_file checks the rest.)
        config.conversations.validate(config.base.is_some(), config.first_head_setting()).map_err(Error::Invalid)?;
        // Checked before any weights load, so a bad file fails at once.
        let dataset = Dataset::open(&config.conversations)?;
        let out = config.out.clone();
        let checkpoint = out.join("checkpoint");
        let resuming = resume && checkpoint.join("model.safetensors").is_file();
        if resume && !resuming {
            return Err(Error::model_file(
                &checkpoint,
                "no checkpoint to resume from (expected model.safetensors there)",
            ));
        }
        if resuming && config.base.is_none() {
            folder::check_resumed_shape(&out, &config.model)?;
        }
        if !resuming && config.base.is_none() {
            folder::write_new(&out, &config)?;
        }
        // A base is read from its own folder, so that a base or settings the trainer cannot
        // use are refused before anything is copied.
        let dir = ModelDir::open(config.base.as_ref().unwrap_or(&out))?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let (model, base) = model::build(&dir, config.base.is_some(), vb)?;
        if resuming {
            load_into(&varmap, &[checkpoint.join("model.safetensors")])?;
        } else if let Some(base) = &base {
            load_into(&varmap, &base.files)?;
        } else {
            init_weights(&varmap, config.seed)?;
        }
        if let (Some(data), false) = (&dataset, model.takes_video()) {
            data.refuse_videos(&model.info().family)?;
        }
        let config = model::fit_tasks(config, model.as_ref())?;
        let heads = Heads::for_model(&config, model.as_ref(), resuming.then_some(checkpoint.as_path()))?;
        let chat = Chat::load(&dir, model.tokenizer())?;
        if let (Some(base), false) = (&config.base, resuming) {
            folder::copy_base(base, &out)?;
        }
        let mut vars: Vec<(String, Var)> = std::iter::once(&varmap)
            .chain(heads.var_maps())
            .flat_map(|m| {
                m.data().lock().expect("var map lock").iter().map(|(n, v)| (n.clone(), v.clone())).collect::<Vec<_>>()
            })
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors = vars.iter().map(|(_, v)| v.as_tensor().clone()).collect();
        let mut optimizer = AdamW::new(vars)?;
        if resuming {
            let fresh = heads.fresh(&checkpoint);
            let fresh_boxes = heads.fresh_boxes(&checkpoint);
            optimizer.load(&checkpoint.join("optimizer.safetensors"), &|name| {
                fresh.iter().any(|(prefix, _)| name.starts_with(prefix))
                    || (fresh_boxes && name.starts_with("box_head"))
            })?;
            if let Some((prefix, file)) = fresh.first().filter(|_| optimizer.step > config.dense.warmup_steps) {
                return Err(Error::model_file(
                    &checkpoint.join(file),
                    format!(
                        "missing: the checkpoint is past its question step {} without the {} \
                         (a head added after the dense warm-up can only start with the questions)",
                        optimizer.step - config.dense.warmup_steps,
                        prefix.replace('_', " ")
                    ),
                ));
            }
        }
        let base_files = base.map(|b| b.files).unwrap_or_default();
        Ok(Self { config, model, varmap, chat, dataset, base_files, optimizer, heads, vars: tensors, pool: None, out })
    }

    /// Shares each step's items (packed samples, scenes) among `threads` threads, each item
    /// on one thread; gradients are summed in item order, so results do not depend on
    /// `threads`. Pays when candle's own per-operation threading is off
    /// (`CANDLE_NUM_THREADS=1`, `RAYON_NUM_THREADS=1`), as `ocular train` sets it.
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        self.pool = parallel::pool(threads)?;
        Ok(())
    }

    pub fn step(&self) -> usize {
        self.optimizer.step
    }

    pub fn parameters(&self) -> usize {
        self.varmap.all_vars().iter().map(|v| v.elem_count()).sum()
    }

    /// One sample's answer loss as a sum, weighted as `weighting` says, over its answer tokens
    /// (per token) or its answers (each answer's tokens averaged first).
    fn sample_part(&self, s: &Sample, weighting: LossWeighting) -> Result<Part> {
        let [answers, ..] = self.sample_parts(s, weighting, false)?;
        Ok(answers.expect("the answers' part is always computed"))
    }

    /// [`Self::sample_part`], and with `with_aux`, the question steps' auxiliary losses
    /// (`train::question_aux`) the config asks for.
    fn sample_parts(&self, s: &Sample, weighting: LossWeighting, with_aux: bool) -> Result<[Option<Part>; 5]> {
        let train_vision = self.config.optim.vision_lr_scale > 0.0;
        let aux = QuestionAux::new(&self.config, &self.heads, with_aux);
        let (logits, tapped) =
            self.model.logits_packed_tapped(&s.prepared, &s.positions, &s.mask, &s.rows, train_vision, &aux.taps())?;
        let [position, object_box, pointer, inventory] = match self.model.as_qwen2_vl() {
            Some(qwen) => aux.parts(qwen, s, tapped)?,
            None => [None, None, None, None],
        };
        let targets = Tensor::new(s.targets.as_slice(), logits.device())?;
        let nll =
            candle_nn::ops::log_softmax(&logits, D::Minus1)?.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
        let answers = match weighting {
            LossWeighting::Token => Part { sum: nll.sum_all()?, count: s.targets.len() as f64 },
            LossWeighting::Answer => {
                let per_token: Vec<f32> =
                    s.answers.iter().flat_map(|a| std::iter::repeat(1.0 / a.len() as f32).take(a.len())).collect();
                let sum = (nll * Tensor::new(per_token, logits.device())?)?.sum_all()?;
                Part { sum, count: s.answers.len() as f64 }
            }
        };
        Ok([Some(answers), position, object_box, pointer, inventory])
    }

    /// The answers' summed cross-entropy over `samples`, weighted as `weighting` says, and the
    /// total weight to divide it by (answer tokens, or answers).
    #[cfg(test)]
    fn loss(&self, samples: &[Sample], weighting: LossWeighting) -> Result<(Tensor, f64)> {
        let mut total: Option<Tensor> = None;
        let mut weight = 0.0;
        for s in samples {
            let part = self.sample_part(s, weighting)?;
            weight += part.count;
            total = Some(match total {
                Some(t) => (t + part.sum)?,
                None => part.sum,
            });
        }
        Ok((total.ok_or_else(|| Error::Invalid("empty batch".into()))?, weight))
    }

    /// `n` packed groups of examples about shared media: drawn in order from `generator`,
    /// prepared (tokenised, pixels and positions) on the pool's threads.
    fn samples(&self, generator: &mut Generator, n: usize) -> Result<Vec<Sample>> {
        let questions = self.config.optim.questions_per_image.max(1);
        let groups: Vec<_> = (0..n).map(|_| generator.group(questions)).collect();
        parallel::map(self.pool.as_ref(), &groups, &|group| sample(self.model.as_ref(), &self.chat, group))
    }

    /// `entries` of the user's `file` as samples, prepared on the pool's threads. One that
    /// cannot be made into a sample (an image corrupt past its header, a first answer past
    /// `max_tokens`) is left out and named in the second list, so that a long run does not
    /// stop on it; a batch that keeps none is an error.
    fn conversation_samples(&self, file: &Conversations, entries: &[&Entry]) -> Result<(Vec<Sample>, Vec<String>)> {
        let data = self.dataset.as_ref().expect("conversations are drawn from a dataset");
        let made = parallel::map(self.pool.as_ref(), entries, &|entry| {
            let sample = data.media(entry).and_then(|media| {
                let max_tokens = data.settings.max_tokens;
                conversation_sample(self.model.as_ref(), &self.chat, &entry.messages, &media, max_tokens)
            });
            Ok(sample.map_err(|e| format!("{}: {}: {e}", file.path.display(), entry.name)))
        })?;
        let (samples, skipped): (Vec<_>, Vec<_>) = made.into_iter().partition(|s| s.is_ok());
        let skipped: Vec<String> = skipped.into_iter().filter_map(|s| s.err()).collect();
        if samples.is_empty() {
            return Err(Error::Invalid(format!("no entry of the batch could be used; the first: {}", skipped[0])));
        }
        Ok((samples.into_iter().filter_map(|s| s.ok()).collect(), skipped))
    }

    /// What optimiser step `step` of the question stage learns from: scene examples drawn
    /// from its own generator, or its share of the user's conversations (and those of them
    /// left out).
    fn step_samples(&self, step: usize) -> Result<(Vec<Sample>, Vec<String>)> {
        let n = self.config.optim.batch_size;
        match &self.dataset {
            Some(data) => self.conversation_samples(&data.train, &data.train.draw(self.config.seed, step, n)),
            None => Ok((self.samples(&mut generator(&self.config, step as u64), n)?, vec![])),
        }
    }

    /// Whether the run has held-out examples (a run on conversations has them only with
    /// `conversations.eval`).
    fn has_held_out(&self) -> bool {
        self.dataset.as_ref().is_none_or(|d| d.eval.is_some())
    }

    /// Mean loss on held-out examples: scenes from a seed no training step uses, or the first
    /// `optim.eval_examples` held-out conversations.
    pub fn eval_loss(&self) -> Result<f32> {
        let n = self.config.optim.eval_examples.max(1);
        let samples = match self.dataset.as_ref().map(|d| d.eval.as_ref()) {
            Some(Some(eval)) => self.conversation_samples(eval, &eval.entries.iter().take(n).collect::<Vec<_>>())?.0,
            Some(None) => return Err(Error::Invalid("no held-out conversations (conversations.eval)".into())),
            None => {
                self.samples(&mut Generator::new(self.config.seed ^ 0x5EED_0F_E7A1, self.config.data.clone()), n)?
            }
        };
        // Per token whatever the run's weighting, so held-out losses of runs compare.
        let parts = parallel::map(self.pool.as_ref(), &samples, &|s| {
            let part = self.sample_part(s, LossWeighting::Token)?;
            Ok((f64::from(part.sum.to_scalar::<f32>()?), part.count))
        })?;
        let (sum, n) = parts.iter().fold((0.0, 0.0), |(s, n), p| (s + p.0, n + p.1));
        Ok((sum / n.max(1.0)) as f32)
    }

    /// The scenes and clips the dense head learns from on step `step` (none without a dense
    /// head).
    fn dense_items(&self, step: usize) -> Vec<DenseItem> {
        if self.heads.dense.is_none() {
            return vec![];
        }
        let d = &self.config.dense;
        let n = if step < d.warmup_steps { d.warmup_batch_size } else { d.batch_size };
        dense::items(self.config.seed, step as u64, &self.config.data, n, d.videos)
    }

    /// One item's loss parts: the answers' first, then the dense head's, then those of
    /// [`Self::aux_weights`], in its order.
    fn item_parts(&self, item: &Item, weighting: LossWeighting) -> Result<Vec<Option<Part>>> {
        let dense_parts = self.heads.dense.as_ref().map_or(0, |(h, _)| h.part_count());
        let (answers, dense, aux) = match item {
            Item::Sample(s) => {
                let [answers, position, object_box, pointer, inventory] = self.sample_parts(s, weighting, true)?;
                (answers, (0..dense_parts).map(|_| None).collect(), [position, object_box, pointer, inventory])
            }
            Item::Dense(dense) => {
                let (head, _) = self.heads.dense.as_ref().expect("dense items are drawn for a dense head only");
                let qwen = self.model.as_qwen2_vl().expect("heads are built for Qwen2-VL models only");
                (None, head.parts(qwen, dense)?, [None, None, None, None])
            }
        };
        let on = self.aux_weights().map(|w| w.is_some());
        let aux = aux.into_iter().zip(on).filter(|(_, on)| *on).map(|(part, _)| part);
        Ok(std::iter::once(answers).chain(dense).chain(aux).collect())
    }

    /// The question steps' auxiliary losses' weights (`train::question_aux`).
    fn aux_weights(&self) -> [Option<f64>; AUX_LOSSES] {
        QuestionAux::weights(&self.config, &self.heads)
    }

    /// Trains `dense.warmup_steps` vision-only steps, then `optim.steps` question steps,
    /// calling `report` after every step. Returns the model folder.
    pub fn run(&mut self, report: &mut dyn FnMut(&Progress)) -> Result<PathBuf> {
        let o = self.config.optim.clone();
        let d = self.config.dense.clone();
        let total = d.warmup_steps + o.steps;
        // Warm-up images and question-step tokens this run has seen.
        let (mut images, mut tokens) = (0usize, 0usize);
        // (steps, seconds) of this run's warm-up and question steps: the ETA prices each
        // stage's remaining steps at that stage's own pace.
        let mut timed = [(0usize, 0.0f64); 2];
        while self.optimizer.step < total {
            let step = self.optimizer.step;
            let step_start = Instant::now();
            let warm = step < d.warmup_steps;
            let (samples, skipped) = if warm { (vec![], vec![]) } else { self.step_samples(step - d.warmup_steps)? };
            tokens += samples.iter().map(|s| s.prepared.ids.len()).sum::<usize>();
            // Question steps learn from the dense head too only when it weighs something.
            let dense_items = if warm || d.weight > 0.0 { self.dense_items(step) } else { vec![] };
            if warm {
                images += dense_items.len();
            }
            let items: Vec<Item> =
                samples.iter().map(Item::Sample).chain(dense_items.iter().map(Item::Dense)).collect();
            let dense_parts = self.heads.dense.as_ref().map_or(0, |(h, _)| h.part_count());
            let dense_weight = if warm { 1.0 } else { d.weight };
            let weights: Vec<f64> = std::iter::once(1.0)
                .chain((0..dense_parts).map(|_| dense_weight))
                .chain(self.aux_weights().into_iter().flatten())
                .collect();
            let mut computed = parallel::step(self.pool.as_ref(), &items, &weights, &self.vars, |item| {
                self.item_parts(item, o.loss_weighting)
            })?;
            let dense = (!dense_items.is_empty()).then(|| DenseParts::from_means(&computed.means[1..=dense_parts]));
            // Each asked-for question-step loss's mean, in aux_weights' order; None where not asked.
            let mut means = computed.means[1 + dense_parts..].iter().copied();
            let [position, object_box, pointer, inventory] =
                self.aux_weights().map(|w| w.and_then(|_| means.next().flatten()));
            // What the step reports: the dense loss in the warm-up, the answers' after.
            let (loss, lr) = if warm {
                // A short linear ramp, then constant or cosine: the warm-up is a stage of its own.
                (computed.objective, d.schedule().at(step))
            } else {
                (computed.means[0].unwrap_or(0.0), learning_rate(&o, step - d.warmup_steps))
            };
            let grad_norm = self.optimizer.clip(&mut computed.grads, o.grad_clip)?;
            // Question steps may train the vision tower and merger slower, or not at all.
            let vision_lr = if warm { lr } else { lr * o.vision_lr_scale };
            self.optimizer.apply(&computed.grads, &o, &|name| {
                if self.model.is_vision_tower(name) {
                    vision_lr
                } else {
                    lr
                }
            })?;
            let stage = &mut timed[usize::from(!warm)];
            *stage = (stage.0 + 1, stage.1 + step_start.elapsed().as_secs_f64());
            let done = self.optimizer.step;
            let questions_done = done.saturating_sub(d.warmup_steps);
            let eval_loss = if o.eval_every > 0
                && questions_done > 0
                && questions_done % o.eval_every == 0
                && self.has_held_out()
            {
                Some(self.eval_loss()?)
            } else {
                None
            };
            if o.checkpoint_every > 0 && done % o.checkpoint_every == 0 && done < total {
                self.checkpoint()?;
            }
            let left = [d.warmup_steps.saturating_sub(done), total - done.max(d.warmup_steps)];
            report(&Progress {
                step: done,
                steps: total,
                loss,
                lr,
                grad_norm,
                dense,
                position,
                pointer,
                object_box,
                inventory,
                rate: if warm {
                    Rate::ImagesPerSec(images as f64 / timed[0].1.max(1e-9))
                } else {
                    Rate::TokensPerSec(tokens as f64 / timed[1].1.max(1e-9))
                },
                eta_secs: eta_secs(left, timed),
                eval_loss,
                skipped,
            });
        }
        self.checkpoint()?;
        save_model(&self.varmap, &self.base_files, &self.out.join("model.safetensors"))?;
        Ok(self.out.clone())
    }

    fn checkpoint(&self) -> Result<()> {
        let dir = self.out.join("checkpoint");
        std::fs::create_dir_all(&dir).map_err(|e| Error::model_file(&dir, e))?;
        self.varmap.save(dir.join("model.safetensors"))?;
        self.optimizer.save(&dir.join("optimizer.safetensors"))?;
        self.heads.save(&dir)
    }
}

#[cfg(test)]
#[path = "trainer_tests.rs"]
mod tests;
