//! Tests of the training loop (a child module of `trainer`, kept in its own file).
use super::*;
use std::path::Path;

pub(super) fn tiny(out: &Path, steps: usize) -> TrainConfig {
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
    let out = scratch("patch7");
    let mut config = tiny(&out, 1);
    config.model.vision_patch_size = 7;
    config.model.min_pixels = 14 * 14;
    config.model.max_pixels = 28 * 28 * 4;
    let trainer = Trainer::new(config, false).unwrap();
    let read =
        |f: &str| serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(out.join(f)).unwrap()).unwrap();
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
        let s = sample(trainer.model.as_ref(), &trainer.chat, &group).unwrap();
        let trained = packed_logits(trainer.model.as_ref(), &s);
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
    let (sum, n) = trainer.loss(&samples, LossWeighting::Token).unwrap();
    let grads = (sum / n).unwrap().backward().unwrap();
    let data = trainer.varmap.data().lock().unwrap();
    let mut without: Vec<&String> = Vec::new();
    for (name, var) in data.iter() {
        let norm = grads.get(var.as_tensor()).map(|g| g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap());
        if !norm.is_some_and(|n| n > 0.0) {
            without.push(name);
        }
    }
    assert!(without.is_empty(), "no gradient reaches {without:?}");
    let _ = std::fs::remove_dir_all(&out);
}

/// Weighted per answer, a packed group's loss is the mean of its answers' own mean losses
/// (answers of different lengths weigh the same); weighted per token, the mean over tokens.
#[test]
fn answer_weighting_averages_each_answer_first() {
    let (trainer, out) = one_step_trainer("weighting");
    let mut gen = Generator::new(11, trainer.config.data.clone());
    let group = (0..20).map(|_| gen.group(4)).find(|g| {
        let lens: Vec<usize> = g.iter().map(|e| e.answer.len()).collect();
        lens.len() >= 3 && lens.iter().min() != lens.iter().max()
    });
    let group = group.expect("a group of answers of different lengths");
    let alone: Vec<(f64, f64)> = group
        .iter()
        .map(|e| {
            let s = sample(trainer.model.as_ref(), &trainer.chat, std::slice::from_ref(e)).unwrap();
            let (sum, n) = trainer.loss(&[s], LossWeighting::Token).unwrap();
            (sum.to_scalar::<f32>().unwrap() as f64, n)
        })
        .collect();
    let packed = sample(trainer.model.as_ref(), &trainer.chat, &group).unwrap();
    assert_eq!(packed.answers.len(), group.len());
    let (sum, n) = trainer.loss(std::slice::from_ref(&packed), LossWeighting::Answer).unwrap();
    let per_answer = sum.to_scalar::<f32>().unwrap() as f64 / n;
    let want = alone.iter().map(|(s, n)| s / n).sum::<f64>() / alone.len() as f64;
    assert!((per_answer - want).abs() < 1e-4, "per answer {per_answer} vs {want}");
    let (sum, n) = trainer.loss(&[packed], LossWeighting::Token).unwrap();
    let per_token = sum.to_scalar::<f32>().unwrap() as f64 / n;
    let want = alone.iter().map(|(s, _)| s).sum::<f64>() / alone.iter().map(|(_, n)| n).sum::<f64>();
    assert!((per_token - want).abs() < 1e-4, "per token {per_token} vs {want}");
    assert!((per_token - per_answer).abs() > 1e-3, "the two weightings should differ here");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn packed_answers_score_as_if_asked_alone() {
    let (trainer, out) = one_step_trainer("pack");
    check_packing(&trainer);
    let _ = std::fs::remove_dir_all(&out);
}

/// With the question before the image, each packed answer carries its own image tokens.
#[test]
fn packed_answers_score_as_if_asked_alone_with_the_question_first() {
    let out = scratch("pack-text-first");
    let mut config = tiny(&out, 1);
    config.model.text_before_media = true;
    let trainer = Trainer::new(config, false).unwrap();
    let template = std::fs::read_to_string(out.join("chat_template.jinja")).unwrap();
    assert_eq!(template, super::super::tokenizer::CHAT_TEMPLATE_TEXT_FIRST);
    check_packing(&trainer);
    let _ = std::fs::remove_dir_all(&out);
}

/// The logits of every scored row of `s`, vision tower included in the graph.
fn packed_logits(model: &dyn TrainModel, s: &Sample) -> Tensor {
    model.logits_packed_tapped(&s.prepared, &s.positions, &s.mask, &s.rows, true, &[]).unwrap().0
}

/// The saved folder's logits after the prompt of `s`'s first answer equal the trainer's.
pub(super) fn computes_as_trained_on(trainer: &Trainer, pipeline: &crate::pipeline::Pipeline, s: &Sample) {
    let trained = packed_logits(trainer.model.as_ref(), s).to_vec2::<f32>().unwrap().remove(0);
    let mut prompt = s.prepared.clone();
    prompt.ids.truncate(s.rows[0] as usize + 1);
    let inferred = pipeline.last_logits(&prompt).unwrap();
    let gap = inferred.iter().zip(&trained).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(gap < 1e-4, "training and the saved model differ by {gap}");
}

fn check_packing(trainer: &Trainer) {
    let (model, template) = (trainer.model.as_ref(), &trainer.chat);
    let mut gen = Generator::new(11, trainer.config.data.clone());
    let mut checked = 0;
    for _ in 0..6 {
        let group = gen.group(4);
        let packed = sample(model, template, &group).unwrap();
        let logits = |s: &Sample| packed_logits(model, s);
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
        let gap = together.iter().flatten().zip(alone.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(gap < 1e-4, "packed and alone differ by {gap} for {} questions", group.len());
        checked += group.len();
        if group.len() > 1 {
            assert!(packed.prepared.ids.len() < alone_len, "packing saved nothing");
        }
    }
    assert!(checked >= 12, "groups held only {checked} questions");
}

/// A base of a family the trainer cannot train, or a folder that is no model, is refused by
/// name, and nothing is written.
#[test]
fn a_base_of_another_family_or_no_model_is_refused_before_anything_is_copied() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let other = scratch("idefics-base");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("config.json"), r#"{"model_type": "idefics"}"#).unwrap();
    for (base, expected) in [
        (other.clone(), "model_type \"idefics\": `ocular train` fine-tunes llava, qwen2_vl, qwen2_5_vl models only"),
        (root.join("tests/fixtures/llava/one_image"), "missing: every model folder needs config.json"),
    ] {
        let out = scratch("base-refused");
        let config = TrainConfig { out: out.clone(), base: Some(base.clone()), ..Default::default() };
        let message = Trainer::new(config, false).err().expect("the base must be refused").to_string();
        assert!(message.contains(expected), "{message}");
        assert!(message.contains(&base.join("config.json").display().to_string()), "{message}");
        assert!(!out.exists(), "{} was written", out.display());
    }
    let _ = std::fs::remove_dir_all(&other);
}

/// One example's loss and gradients on the built-in model equal transformers' autograd
/// (tests/fixtures/builtin/grads.safetensors, from scripts/fixtures/train_grads.py).
#[test]
fn gradients_match_transformers() {
    check_gradients("models/builtin", "tests/fixtures/builtin/grads.safetensors", 7);
}

/// The same for a LLaVA base, whose template ends an answer with no end-of-turn token (the
/// EOS is appended) and whose tokenizer adds a BOS.
#[test]
fn gradients_match_transformers_for_llava() {
    check_gradients("tests/fixtures/llava/one_image/model", "tests/fixtures/llava/train_grads.safetensors", 5);
}

/// Fine-tunes `base` for no step: the rendered example, its loss and every trained tensor's
/// gradient equal `fixture`'s (norms for all, whole gradients for `full` of them).
fn check_gradients(base: &str, fixture: &str, full: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let want = candle_core::safetensors::load(root.join(fixture), &Device::Cpu).unwrap();
    let out = scratch(&format!("grad-parity-{full}"));
    let config = TrainConfig { out: out.clone(), base: Some(root.join(base)), ..Default::default() };
    let trainer = Trainer::new(config, false).unwrap();
    let example = super::super::scenes::Example {
        kind: super::super::scenes::Task::Attribute,
        images: vec![::image::open(root.join("examples/scene.png")).unwrap().to_rgb8()],
        video: None,
        question: "What colour is the square?".into(),
        answer: "blue".into(),
        target_box: None,
        focus: vec![],
        scenes: vec![],
    };
    let s = sample(trainer.model.as_ref(), &trainer.chat, &[example]).unwrap();
    let ids: Vec<u32> = want["ids"].to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
    assert_eq!(s.prepared.ids, ids, "the rendered example differs from transformers'");
    let (sum, n) = trainer.loss(&[s], LossWeighting::Token).unwrap();
    let loss = (sum / n).unwrap();
    let (ours, theirs) = (loss.to_scalar::<f32>().unwrap(), want["loss"].to_vec1::<f32>().unwrap()[0]);
    assert!((ours - theirs).abs() < 1e-5 * theirs.max(1.0), "loss {ours} vs transformers' {theirs}");
    let grads = loss.backward().unwrap();
    let mut compared = 0;
    for (name, var) in trainer.varmap.data().lock().unwrap().iter() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let theirs = want[&format!("norm.{name}")].to_vec1::<f32>().unwrap()[0];
        let ours = g.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
        // The floor covers gradients that are zero but for rounding (a key bias's: softmax
        // ignores what it adds to every key alike).
        assert!((ours - theirs).abs() <= 1e-3 * theirs + 1e-6, "{name}: gradient norm {ours} vs {theirs}");
        if let Some(full) = want.get(&format!("grad.{name}")) {
            let gap = (g - full).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(gap <= 1e-3 * theirs.max(1e-6), "{name}: gradients differ by up to {gap}");
            compared += 1;
        }
    }
    assert_eq!(compared, full, "every whole gradient in the fixture was compared");
    let _ = std::fs::remove_dir_all(&out);
}

/// A new tiny model's trainer in a fresh folder (removed by the caller).
/// An empty temporary folder of this test's own (tests run in parallel in one process).
pub(super) fn scratch(name: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("ocular-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    out
}

fn one_step_trainer(name: &str) -> (Trainer, PathBuf) {
    let out = scratch(name);
    (Trainer::new(tiny(&out, 1), false).unwrap(), out)
}

#[test]
fn loss_falls_runs_resume_and_the_folder_loads() {
    let out = scratch("train");
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

    // A resumed run whose [model] differs from the folder's is refused, naming the field.
    let mut other = tiny(&out, 16);
    other.model.rope_theta = 20.0;
    let message = Trainer::new(other, true).err().expect("a changed rotary base must not resume").to_string();
    assert!(message.contains("config.json") && message.contains("rope_theta is 10000"), "{message}");
    assert!(message.contains("asks for 20"), "{message}");
    let mut other = tiny(&out, 16);
    other.model.max_pixels = 84 * 84;
    let message = Trainer::new(other, true).err().expect("a changed image size must not resume").to_string();
    assert!(message.contains("processor_config.json") && message.contains("longest_edge"), "{message}");

    // The folder is a normal model folder.
    let pipeline = crate::pipeline::Pipeline::load(&out, &Default::default()).unwrap();
    assert_eq!(pipeline.model.info().family, "qwen2_vl");
    let _ = std::fs::remove_dir_all(&out);
}

/// Copies a run's folder and its checkpoint, as a run interrupted now would leave them.
pub(super) fn copy_run(from: &Path, to: &Path) {
    for dir in ["", "checkpoint"] {
        std::fs::create_dir_all(to.join(dir)).unwrap();
        for entry in std::fs::read_dir(from.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, to.join(dir).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
}

/// A run interrupted after its warm-up and resumed ends with the same weights, bit for bit, as
/// one run straight through (the built-in model was made so: configs/builtin.toml).
#[test]
fn a_run_resumed_after_its_warm_up_ends_bit_for_bit_as_one_run() {
    let (straight, interrupted) = (scratch("train-straight"), scratch("train-interrupted"));
    let config = |out: &Path| {
        let mut c = tiny(out, 2);
        c.dense.warmup_steps = 2;
        c.dense.warmup_batch_size = 2;
        c.optim.vision_lr_scale = 0.0;
        c.optim.checkpoint_every = 2;
        c
    };
    let mut trainer = Trainer::new(config(&straight), false).unwrap();
    trainer
        .run(&mut |p| {
            if p.step == 2 {
                copy_run(&straight, &interrupted);
            }
        })
        .unwrap();
    let mut resumed = Trainer::new(config(&interrupted), true).unwrap();
    assert_eq!(resumed.step(), 2);
    resumed.run(&mut |_| {}).unwrap();
    let weights = |out: &Path| std::fs::read(out.join("model.safetensors")).unwrap();
    assert!(weights(&straight) == weights(&interrupted), "the resumed run's weights differ");
    for out in [straight, interrupted] {
        let _ = std::fs::remove_dir_all(&out);
    }
}

/// `vision_lr_scale = 0` freezes the vision tower and merger on question steps (a dense
/// warm-up still trains them); the language model trains as usual.
#[test]
fn a_zero_vision_lr_scale_freezes_the_vision_side_after_the_warm_up() {
    let out = scratch("train-frozen-vision");
    let mut config = tiny(&out, 1);
    config.optim.vision_lr_scale = 0.0;
    config.dense.warmup_steps = 2;
    config.dense.warmup_batch_size = 2;
    let weights = |t: &Trainer| -> Vec<(String, Vec<f32>)> {
        let data = t.varmap.data().lock().unwrap();
        let mut all: Vec<_> =
            data.iter().map(|(n, v)| (n.clone(), v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    };
    let mut trainer = Trainer::new(config.clone(), false).unwrap();
    let init = weights(&trainer);
    trainer.run(&mut |_| {}).unwrap();
    let warmed = weights(&trainer);
    config.optim.steps = 3;
    let mut resumed = Trainer::new(config, true).unwrap();
    resumed.run(&mut |_| {}).unwrap();
    let asked = weights(&resumed);
    let changed = |a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], vision: bool| {
        a.iter()
            .zip(b)
            .filter(|(x, _)| resumed.model.is_vision_tower(&x.0) == vision)
            .filter(|(x, y)| x.1 != y.1)
            .count()
    };
    assert!(changed(&init, &warmed, true) > 0, "the warm-up trained no vision weight");
    assert_eq!(changed(&warmed, &asked, true), 0, "question steps moved vision weights");
    assert!(changed(&warmed, &asked, false) > 0, "question steps trained no language-model weight");
    let _ = std::fs::remove_dir_all(&out);
}

/// `[model] mrope_section` and `rope_theta` reach the written config.json, which loads.
#[test]
fn the_rotary_settings_are_written_to_the_model_folder() {
    let out = scratch("mrope-section");
    let mut config = tiny(&out, 1);
    config.model.mrope_section = Some([1, 2, 5]);
    config.model.rope_theta = 20.0;
    let _trainer = Trainer::new(config, false).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let rope = &written["text_config"]["rope_parameters"];
    assert_eq!(
        (rope["mrope_section"].clone(), rope["rope_theta"].as_f64()),
        (serde_json::json!([1, 2, 5]), Some(20.0))
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// `[model] split_digits` writes a tokenizer that spells numbers digit by digit, and the
/// model folder loads with it.
#[test]
fn a_digit_splitting_tokenizer_is_written_and_loads() {
    let out = scratch("split-digits");
    let mut config = tiny(&out, 1);
    config.model.split_digits = true;
    let trainer = Trainer::new(config, false).unwrap();
    let ids = trainer.model.tokenizer().encode("(407,1000)", false).unwrap();
    let pieces: Vec<String> = ids.iter().map(|&id| trainer.model.tokenizer().decode(&[id], false).unwrap()).collect();
    assert_eq!(pieces, ["(", "4", "0", "7", ",", "1", "0", "0", "0", ")"]);
    let _ = std::fs::remove_dir_all(&out);
}

/// Threads share a step's samples and scenes, each on one thread, and the gradients are
/// summed in item order: two threads train bit for bit what one does, dense warm-up included.
#[test]
fn threads_do_not_change_what_is_learned() {
    let run = |name: &str, threads: usize| -> Vec<(String, Vec<f32>)> {
        let out = scratch(name);
        let mut config = tiny(&out, 2);
        config.dense.warmup_steps = 2;
        config.dense.warmup_batch_size = 3;
        config.dense.weight = 0.5;
        let mut trainer = Trainer::new(config, false).unwrap();
        trainer.set_threads(threads).unwrap();
        let mut losses = vec![];
        trainer.run(&mut |p| losses.push(p.loss)).unwrap();
        assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
        let data = trainer.varmap.data().lock().unwrap();
        let mut all: Vec<_> =
            data.iter().map(|(n, v)| (n.clone(), v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let _ = std::fs::remove_dir_all(&out);
        all
    };
    let one = run("threads-1", 1);
    let two = run("threads-2", 2);
    assert_eq!(one.len(), two.len());
    for (a, b) in one.iter().zip(&two) {
        assert!(a == b, "{} differs with two threads", a.0);
    }
}

#[path = "trainer_base_tests.rs"]
mod bases;

#[path = "trainer_heads_tests.rs"]
mod heads;

#[path = "trainer_conversations_tests.rs"]
mod conversations;

#[test]
fn the_eta_prices_each_stage_at_its_own_pace() {
    // 0.4 s a warm-up step, 0.9 s a question step.
    let both = eta_secs([10, 20], [(100, 40.0), (50, 45.0)]);
    assert!((both - (10.0 * 0.4 + 20.0 * 0.9)).abs() < 1e-9, "{both}");
    // Before any question step, the question steps are guessed at the warm-up's pace.
    let warm_only = eta_secs([10, 20], [(10, 4.0), (0, 0.0)]);
    assert!((warm_only - 30.0 * 0.4).abs() < 1e-9, "{warm_only}");
    // A resumed run past its warm-up: only question steps are left.
    assert!((eta_secs([0, 5], [(0, 0.0), (5, 4.5)]) - 4.5).abs() < 1e-9);
    assert_eq!(eta_secs([3, 3], [(0, 0.0), (0, 0.0)]), 0.0);
}
