//! The training loop: scene examples drawn from (seed, step) so a run is deterministic and can
//! resume anywhere; loss on answer tokens only; AdamW with warm-up, cosine decay and clipping;
//! held-out loss now and then; resumable checkpoints; a standard model folder at the end.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::batch::{sample, Sample};
use super::config::TrainConfig;
use super::folder;
use super::optim::{learning_rate, AdamW};
use super::scenes::Generator;
use crate::error::{Error, Result};
use crate::load::{ModelDir, WeightIndex};
use crate::models::qwen2_vl::config::Qwen2VlConfig;
use crate::models::qwen2_vl::processor::Qwen2VlProcessor;
use crate::models::qwen2_vl::{Layout, Qwen2Vl};
use crate::prompt::{ChatTemplate, TextTokenizer};
use crate::rng::splitmix64;

/// What the loop reports after each step.
#[derive(Debug, Clone)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_sec: f64,
    pub eta_secs: f64,
    /// Mean loss on held-out examples, on the steps that measure it.
    pub eval_loss: Option<f32>,
}

/// Examples of step `step` are drawn from their own generator, so any step can be redone.
fn generator(config: &TrainConfig, step: u64) -> Generator {
    Generator::new(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(step), config.data.clone())
}

/// Deterministic initial weights: N(0, 0.02) for matrices and embeddings, ones for norm scales,
/// zeros for biases; each tensor's values depend only on the seed and its name.
fn init_weights(varmap: &VarMap, seed: u64) -> Result<()> {
    for (name, var) in varmap.data().lock().expect("var map lock").iter() {
        let n = var.elem_count();
        let values: Vec<f32> = if name.ends_with("bias") {
            vec![0.0; n]
        } else if var.rank() == 1 {
            vec![1.0; n]
        } else {
            let mut state =
                name.bytes().fold(seed ^ 0xA076_1D64_78BD_642F, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3));
            let mut uniform = || (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
            // Box-Muller.
            (0..n)
                .map(|_| {
                    (0.02
                        * (-2.0 * (uniform().max(1e-300)).ln()).sqrt()
                        * (2.0 * std::f64::consts::PI * uniform()).cos()) as f32
                })
                .collect()
        };
        let values =
            if name.ends_with("patch_embed.proj.weight") { zero_sum_rows(values, var.dims()[0]) } else { values };
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}

/// Each patch filter made to sum to zero, so that a flat grey patch (equal in every channel
/// after the processor's normalisation) starts at zero and the features the vision tower
/// first passes on are the objects' colours and edges rather than the background's brightness,
/// which otherwise dominates every token and hides the scene from the language model.
fn zero_sum_rows(mut values: Vec<f32>, rows: usize) -> Vec<f32> {
    let per_row = values.len() / rows.max(1);
    for row in values.chunks_mut(per_row.max(1)) {
        let mean = row.iter().sum::<f32>() / row.len() as f32;
        row.iter_mut().for_each(|v| *v -= mean);
    }
    values
}

pub struct Trainer {
    config: TrainConfig,
    model: Qwen2Vl,
    varmap: VarMap,
    template: ChatTemplate,
    optimizer: AdamW,
    out: PathBuf,
}

impl Trainer {
    /// Prepares `config.out` (a new model's files, or a copy of the base's) and builds the model;
    /// with `resume`, continues from the checkpoint there.
    pub fn new(config: TrainConfig, resume: bool) -> Result<Self> {
        let out = config.out.clone();
        let checkpoint = out.join("checkpoint");
        let resuming = resume && checkpoint.join("model.safetensors").is_file();
        if resume && !resuming {
            return Err(Error::model_file(
                &checkpoint,
                "no checkpoint to resume from (expected model.safetensors there)",
            ));
        }
        if !resuming {
            match &config.base {
                Some(base) => folder::copy_base(base, &out)?,
                None => folder::write_new(&out, &config)?,
            }
        }
        let dir = ModelDir::open(&out)?;
        let qconfig = Qwen2VlConfig::from_json(&dir.config()?)
            .map_err(|message| Error::Config { path: dir.path("config.json"), message })?;
        let template = ChatTemplate::new(
            dir.chat_template()?.ok_or_else(|| Error::Template("the model folder has no chat template".into()))?,
        )?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model =
            Qwen2Vl::build(qconfig, Qwen2VlProcessor::load(&dir)?, TextTokenizer::load(&dir)?, vb, &Layout::V5)?;
        if resuming {
            load_into(&varmap, &[checkpoint.join("model.safetensors")])?;
        } else if let Some(base) = &config.base {
            load_into(&varmap, &ModelDir::open(base)?.weight_files()?)?;
        } else {
            init_weights(&varmap, config.seed)?;
        }
        let mut vars: Vec<(String, Var)> =
            varmap.data().lock().expect("var map lock").iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut optimizer = AdamW::new(vars)?;
        if resuming {
            optimizer.load(&checkpoint.join("optimizer.safetensors"))?;
        }
        Ok(Self { config, model, varmap, template, optimizer, out })
    }

    pub fn step(&self) -> usize {
        self.optimizer.step
    }

    pub fn parameters(&self) -> usize {
        self.varmap.all_vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Summed cross-entropy over the answer tokens of `samples`, and their count.
    fn loss(&self, samples: &[Sample]) -> Result<(Tensor, usize)> {
        let mut total: Option<Tensor> = None;
        let mut count = 0;
        for s in samples {
            let logits = self.model.logits_packed(&s.prepared, &s.positions, &s.mask, &s.rows)?;
            let targets = Tensor::new(s.targets.as_slice(), logits.device())?;
            let ce = (candle_nn::loss::cross_entropy(&logits, &targets)? * s.targets.len() as f64)?;
            count += s.targets.len();
            total = Some(match total {
                Some(t) => (t + ce)?,
                None => ce,
            });
        }
        Ok((total.ok_or_else(|| Error::Invalid("empty batch".into()))?, count))
    }

    /// `n` packed groups of examples about shared media.
    fn samples(&self, generator: &mut Generator, n: usize) -> Result<Vec<Sample>> {
        let questions = self.config.optim.questions_per_image.max(1);
        (0..n).map(|_| sample(&self.model, &self.template, &generator.group(questions))).collect()
    }

    /// Mean loss on held-out examples (a seed no training step uses).
    pub fn eval_loss(&self) -> Result<f32> {
        let mut g = Generator::new(self.config.seed ^ 0x5EED_0F_E7A1, self.config.data.clone());
        let samples = self.samples(&mut g, self.config.optim.eval_examples.max(1))?;
        let (sum, n) = self.loss(&samples)?;
        Ok(sum.to_scalar::<f32>()? / n as f32)
    }

    /// Trains to `optim.steps`, calling `report` after every step. Returns the model folder.
    pub fn run(&mut self, report: &mut dyn FnMut(&Progress)) -> Result<PathBuf> {
        let o = self.config.optim.clone();
        let start = Instant::now();
        let first = self.optimizer.step;
        let mut tokens = 0usize;
        while self.optimizer.step < o.steps {
            let step = self.optimizer.step;
            let samples = self.samples(&mut generator(&self.config, step as u64), o.batch_size)?;
            tokens += samples.iter().map(|s| s.prepared.ids.len()).sum::<usize>();
            let (sum, n) = self.loss(&samples)?;
            let loss = (sum / n as f64)?;
            let mut grads = loss.backward()?;
            let grad_norm = self.optimizer.clip(&mut grads, o.grad_clip)?;
            let lr = learning_rate(&o, step);
            self.optimizer.apply(&grads, &o, lr)?;
            let done = self.optimizer.step;
            let eval_loss = if o.eval_every > 0 && done % o.eval_every == 0 { Some(self.eval_loss()?) } else { None };
            if o.checkpoint_every > 0 && done % o.checkpoint_every == 0 && done < o.steps {
                self.checkpoint()?;
            }
            let elapsed = start.elapsed().as_secs_f64();
            let rate = (done - first) as f64 / elapsed.max(1e-9);
            report(&Progress {
                step: done,
                steps: o.steps,
                loss: loss.to_scalar::<f32>()?,
                lr,
                grad_norm,
                tokens_per_sec: tokens as f64 / elapsed.max(1e-9),
                eta_secs: (o.steps - done) as f64 / rate.max(1e-9),
                eval_loss,
            });
        }
        self.checkpoint()?;
        let weights = self.out.join("model.safetensors");
        self.varmap.save(&weights)?;
        Ok(self.out.clone())
    }

    fn checkpoint(&self) -> Result<()> {
        let dir = self.out.join("checkpoint");
        std::fs::create_dir_all(&dir).map_err(|e| Error::model_file(&dir, e))?;
        self.varmap.save(dir.join("model.safetensors"))?;
        self.optimizer.save(&dir.join("optimizer.safetensors"))?;
        Ok(())
    }
}

/// Sets every variable from the tensors of the same name in `files` (a base model or a
/// checkpoint); a variable the files lack is an error that names it.
fn load_into(varmap: &VarMap, files: &[PathBuf]) -> Result<()> {
    let index = WeightIndex::read(files.to_vec())?;
    let vb = index.var_builder(DType::F32, &Device::Cpu, None)?;
    let dir = files.first().and_then(|f| f.parent()).unwrap_or(Path::new("."));
    for (name, var) in varmap.data().lock().expect("var map lock").iter() {
        let t = vb.get(var.shape(), name).map_err(|e| Error::weights(dir, &e))?;
        var.set(&t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(out: &Path, steps: usize) -> TrainConfig {
        let mut c = TrainConfig { out: out.to_path_buf(), seed: 3, ..Default::default() };
        c.model = super::super::config::ModelShape {
            vocab_size: 400,
            vision_depth: 1,
            vision_width: 32,
            vision_heads: 2,
            text_layers: 1,
            text_hidden: 64,
            text_heads: 4,
            text_kv_heads: 2,
            text_intermediate: 128,
            min_pixels: 28 * 28,
            max_pixels: 56 * 56,
            ..Default::default()
        };
        c.data.max_side = 160;
        c.optim.steps = steps;
        c.optim.batch_size = 2;
        c.optim.lr = 3e-3;
        c.optim.warmup_steps = 2;
        c.optim.eval_every = 0;
        c.optim.checkpoint_every = 0;
        c
    }

    /// Training computes with differentiable (composed) kernels, inference with fused ones:
    /// the saved model must answer as it trained.
    #[test]
    fn the_saved_model_computes_what_training_computed() {
        let (trainer, out) = one_step_trainer("modes");
        saved_model_matches_training(&trainer, &out);
    }

    /// A smaller vision patch (finer shapes) makes a model folder that transformers' layout
    /// describes and Ocular loads and runs as it trained.
    #[test]
    fn a_smaller_patch_size_trains_and_loads() {
        let out = std::env::temp_dir().join(format!("ocular-patch7-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut config = tiny(&out, 1);
        config.model.vision_patch_size = 7;
        config.model.min_pixels = 14 * 14;
        config.model.max_pixels = 28 * 28 * 4;
        let trainer = Trainer::new(config, false).unwrap();
        let read = |f: &str| {
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(out.join(f)).unwrap()).unwrap()
        };
        assert_eq!(read("config.json")["vision_config"]["patch_size"], 7);
        assert_eq!(read("processor_config.json")["image_processor"]["patch_size"], 7);
        saved_model_matches_training(&trainer, &out);
    }

    fn saved_model_matches_training(trainer: &Trainer, out: &Path) {
        trainer.varmap.save(out.join("model.safetensors")).unwrap();
        let pipeline = crate::pipeline::Pipeline::load(&out, &Default::default()).unwrap();
        let mut gen = Generator::new(9, trainer.config.data.clone());
        for _ in 0..3 {
            let group = gen.group(1);
            let s = sample(&trainer.model, &trainer.template, &group).unwrap();
            let trained = trainer.model.logits_packed(&s.prepared, &s.positions, &s.mask, &s.rows).unwrap();
            let trained = trained.to_vec2::<f32>().unwrap().remove(0);
            let mut prompt = s.prepared.clone();
            prompt.ids.truncate(s.rows[0] as usize + 1);
            let inferred = pipeline.last_logits(&prompt).unwrap();
            let gap = inferred.iter().zip(&trained).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(gap < 1e-4, "{:?}: training and the saved model differ by {gap}", group[0].kind);
        }
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        let (trainer, out) = one_step_trainer("grads");
        let mut gen = Generator::new(5, trainer.config.data.clone());
        let samples = trainer.samples(&mut gen, 2).unwrap();
        let (sum, n) = trainer.loss(&samples).unwrap();
        let grads = (sum / n as f64).unwrap().backward().unwrap();
        let data = trainer.varmap.data().lock().unwrap();
        let mut without: Vec<&String> = Vec::new();
        for (name, var) in data.iter() {
            let norm =
                grads.get(var.as_tensor()).map(|g| g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap());
            if !norm.is_some_and(|n| n > 0.0) {
                without.push(name);
            }
        }
        assert!(without.is_empty(), "no gradient reaches {without:?}");
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn packed_answers_score_as_if_asked_alone() {
        use crate::models::VisionLanguageModel;
        let (trainer, out) = one_step_trainer("pack");
        let (model, template) = (&trainer.model, &trainer.template);
        let mut gen = Generator::new(11, trainer.config.data.clone());
        let mut checked = 0;
        for _ in 0..6 {
            let group = gen.group(4);
            let packed = sample(model, template, &group).unwrap();
            let logits = |s: &Sample| model.logits_packed(&s.prepared, &s.positions, &s.mask, &s.rows).unwrap();
            let together = logits(&packed).to_vec2::<f32>().unwrap();
            let (mut alone, mut alone_len) = (Vec::new(), 0);
            for example in &group {
                let one = sample(model, template, std::slice::from_ref(example)).unwrap();
                alone.extend(logits(&one).to_vec2::<f32>().unwrap());
                alone_len += one.prepared.ids.len();
                // The first scored row is what inference predicts after the prompt.
                let start = one.rows[0] as usize + 1;
                let mut prompt = one.prepared.clone();
                prompt.ids.truncate(start);
                let inferred = model.prefill(&prompt, &mut model.new_state()).unwrap().to_vec1::<f32>().unwrap();
                let trained = logits(&one).to_vec2::<f32>().unwrap().remove(0);
                let gap = inferred.iter().zip(&trained).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(gap < 1e-4, "training and inference disagree by {gap}");
            }
            assert_eq!(packed.targets.len(), alone.len());
            let gap =
                together.iter().flatten().zip(alone.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(gap < 1e-4, "packed and alone differ by {gap} for {} questions", group.len());
            checked += group.len();
            if group.len() > 1 {
                assert!(packed.prepared.ids.len() < alone_len, "packing saved nothing");
            }
        }
        assert!(checked >= 12, "groups held only {checked} questions");
        let _ = std::fs::remove_dir_all(&out);
    }

    /// One example's loss and gradients on the built-in model equal transformers' autograd
    /// (tests/fixtures/builtin/grads.safetensors, from scripts/fixtures/train_grads.py).
    #[test]
    fn gradients_match_transformers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let fixture = root.join("tests/fixtures/builtin/grads.safetensors");
        let want = candle_core::safetensors::load(&fixture, &Device::Cpu).unwrap();
        let out = std::env::temp_dir().join(format!("ocular-grad-parity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let config = TrainConfig { out: out.clone(), base: Some(root.join("models/builtin")), ..Default::default() };
        let trainer = Trainer::new(config, false).unwrap();
        let example = super::super::scenes::Example {
            kind: super::super::scenes::Task::Attribute,
            images: vec![::image::open(root.join("examples/scene.png")).unwrap().to_rgb8()],
            video: None,
            question: "What colour is the square?".into(),
            answer: "blue".into(),
            target_box: None,
        };
        let s = sample(&trainer.model, &trainer.template, &[example]).unwrap();
        let ids: Vec<u32> = want["ids"].to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
        assert_eq!(s.prepared.ids, ids, "the rendered example differs from transformers'");
        let (sum, n) = trainer.loss(&[s]).unwrap();
        let loss = (sum / n as f64).unwrap();
        let (ours, theirs) = (loss.to_scalar::<f32>().unwrap(), want["loss"].to_vec1::<f32>().unwrap()[0]);
        assert!((ours - theirs).abs() < 1e-5, "loss {ours} vs transformers' {theirs}");
        let grads = loss.backward().unwrap();
        let mut compared = 0;
        for (name, var) in trainer.varmap.data().lock().unwrap().iter() {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
            let theirs = want[&format!("norm.{name}")].to_vec1::<f32>().unwrap()[0];
            let ours = g.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
            assert!((ours - theirs).abs() <= 1e-3 * theirs + 1e-9, "{name}: gradient norm {ours} vs {theirs}");
            if let Some(full) = want.get(&format!("grad.{name}")) {
                let gap = (g - full).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(gap <= 1e-3 * theirs.max(1e-6), "{name}: gradients differ by up to {gap}");
                compared += 1;
            }
        }
        assert_eq!(compared, 7, "every whole gradient in the fixture was compared");
        let _ = std::fs::remove_dir_all(&out);
    }

    /// A new tiny model's trainer in a fresh folder (removed by the caller).
    fn one_step_trainer(name: &str) -> (Trainer, PathBuf) {
        let out = std::env::temp_dir().join(format!("ocular-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        (Trainer::new(tiny(&out, 1), false).unwrap(), out)
    }

    #[test]
    fn loss_falls_runs_resume_and_the_folder_loads() {
        let out = std::env::temp_dir().join(format!("ocular-train-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut trainer = Trainer::new(tiny(&out, 12), false).unwrap();
        let before = trainer.eval_loss().unwrap();
        trainer.run(&mut |_| {}).unwrap();
        let after = trainer.eval_loss().unwrap();
        assert!(after < before * 0.9, "held-out loss {before} -> {after}");

        // Resuming continues from the checkpoint's step and reaches the new end.
        let mut resumed = Trainer::new(tiny(&out, 14), true).unwrap();
        assert_eq!(resumed.step(), 12);
        let mut steps = vec![];
        resumed.run(&mut |p| steps.push(p.step)).unwrap();
        assert_eq!(steps, vec![13, 14]);

        // The folder is a normal model folder.
        let pipeline = crate::pipeline::Pipeline::load(&out, &Default::default()).unwrap();
        assert_eq!(pipeline.model.info().family, "qwen2_vl");
        let _ = std::fs::remove_dir_all(&out);
    }
}
