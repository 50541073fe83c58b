//! Fine-tuning published models rather than Ocular's own: a LLaVA base (the tiny parity
//! fixture) trains on its answers; a Qwen2-VL base in the Hub's older weight layout, and one
//! stored in f16, come back in their own names and dtype; a Qwen2.5-VL base trains too; each
//! folder keeps every weight transformers expects.
use super::super::*;
use super::{computes_as_trained_on, scratch};
use crate::train::scenes::Task;
use std::path::Path;

const BASE: &str = "tests/fixtures/llava/one_image/model";

/// A short run fine-tuning the tiny LLaVA fixture into `out`.
fn llava(out: &Path, steps: usize) -> TrainConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut c = TrainConfig { out: out.to_path_buf(), base: Some(root.join(BASE)), seed: 5, ..Default::default() };
    c.data.max_side = 160;
    c.optim.steps = steps;
    c.optim.batch_size = 4;
    c.optim.lr = 3e-3;
    c.optim.warmup_steps = 2;
    c.optim.eval_every = 0;
    c.optim.checkpoint_every = 0;
    c
}

fn tensors(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// The saved folder's logits after an example's prompt equal the trainer's.
fn computes_as_trained(trainer: &Trainer, pipeline: &crate::pipeline::Pipeline) {
    let mut gen = super::super::Generator::new(9, trainer.config.data.clone());
    let s = sample(trainer.model.as_ref(), &trainer.chat, &gen.group(1)).unwrap();
    computes_as_trained_on(trainer, pipeline, &s);
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.dims() == b.dims() && (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() == 0.0
}

#[test]
fn a_llava_base_fine_tunes_and_its_folder_loads_whole() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = scratch("llava-ft");
    let mut trainer = Trainer::new(llava(&out, 12), false).unwrap();
    // LLaVA takes no videos and has no box format: those tasks are left out of "all".
    let expected: Vec<Task> = Task::ALL.into_iter().filter(|t| ![Task::Video, Task::Grounding].contains(t)).collect();
    assert_eq!(trainer.config.data.tasks, expected);
    let before = trainer.eval_loss().unwrap();
    trainer.run(&mut |_| {}).unwrap();
    let after = trainer.eval_loss().unwrap();
    assert!(after < before * 0.8, "held-out loss {before} -> {after}");

    // The folder holds every tensor of the base: trained ones changed, and those the model
    // never reads (CLIP's last layer and post-layernorm; LLaVA reads layer -2) as they were.
    let (base, saved) = (tensors(&root.join(BASE).join("model.safetensors")), tensors(&out.join("model.safetensors")));
    let mut names: Vec<&String> = saved.keys().collect();
    names.sort();
    let mut base_names: Vec<&String> = base.keys().collect();
    base_names.sort();
    assert_eq!(names, base_names);
    for (name, t) in &base {
        let unread =
            name.starts_with("vision_tower.encoder.layers.1.") || name.starts_with("vision_tower.post_layernorm");
        assert_eq!(same(t, &saved[name]), unread, "{name}");
    }

    // It loads as a LLaVA model and computes what training computed.
    let pipeline = crate::pipeline::Pipeline::load(&out, &Default::default()).unwrap();
    assert_eq!(pipeline.model.info().family, "llava");
    computes_as_trained(&trainer, &pipeline);
    let _ = std::fs::remove_dir_all(&out);
}

/// What only Qwen2-VL can learn is refused by name, before anything is written.
#[test]
fn a_llava_base_refuses_videos_and_the_qwen2_vl_heads() {
    let out = scratch("llava-refused");
    let mut video = llava(&out, 1);
    video.data.tasks = vec![Task::Count, Task::Video];
    let mut heads = llava(&out, 1);
    heads.optim.pointer_layer = 1;
    let mut dense = llava(&out, 1);
    dense.dense.warmup_steps = 10;
    for (config, expected) in [
        (video, "data.tasks: a llava model cannot learn the video task (it takes no videos)"),
        (heads, "optim.pointer_layer: the auxiliary heads and the dense warm-up are for Qwen2-VL models"),
        (dense, "dense.warmup_steps: the auxiliary heads"),
    ] {
        let message = Trainer::new(config, false).err().expect("must be refused").to_string();
        assert!(message.contains(expected), "{message}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// A Qwen2-VL base with the Hub's 4.x names (`model.layers`, `visual.blocks`) stored in f16
/// trains in f32 and is written back in its own names and dtype.
#[test]
fn a_hub_layout_f16_qwen2_vl_base_keeps_its_names_and_dtype() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let base = scratch("hub-f16-base");
    std::fs::create_dir_all(&base).unwrap();
    let fixture = root.join("tests/fixtures/qwen2_vl/hub_layout/model");
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, base.join(path.file_name().unwrap())).unwrap();
    }
    let half: std::collections::HashMap<String, Tensor> = tensors(&fixture.join("model.safetensors"))
        .into_iter()
        .map(|(name, t)| (name, t.to_dtype(DType::F16).unwrap()))
        .collect();
    candle_core::safetensors::save(&half, base.join("model.safetensors")).unwrap();

    let out = scratch("hub-f16-ft");
    let mut config = llava(&out, 2);
    config.base = Some(base.clone());
    config.optim.questions_per_image = 2;
    let mut trainer = Trainer::new(config, false).unwrap();
    assert!(trainer.config.data.tasks.is_empty(), "Qwen2-VL learns every task");
    trainer.run(&mut |_| {}).unwrap();
    let saved = tensors(&out.join("model.safetensors"));
    let mut names: Vec<&String> = saved.keys().collect();
    names.sort();
    let mut base_names: Vec<&String> = half.keys().collect();
    base_names.sort();
    assert_eq!(names, base_names);
    assert!(saved.values().all(|t| t.dtype() == DType::F16));
    let moved = half
        .iter()
        .filter(|(name, t)| !same(&t.to_dtype(DType::F32).unwrap(), &saved[*name].to_dtype(DType::F32).unwrap()))
        .count();
    assert!(moved > half.len() / 2, "only {moved} of {} tensors changed", half.len());
    let pipeline = crate::pipeline::Pipeline::load(&out, &Default::default()).unwrap();
    assert_eq!(pipeline.model.info().family, "qwen2_vl");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&base);
}

/// A Qwen2.5-VL base (RMSNorm merger, gated vision MLP, windowed attention) fine-tunes too,
/// and comes back as a Qwen2.5-VL folder that computes what training computed.
#[test]
fn a_qwen2_5_vl_base_fine_tunes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = scratch("qwen25-ft");
    let mut config = llava(&out, 2);
    config.base = Some(root.join("tests/fixtures/qwen2_vl/qwen2_5_vl_image/model"));
    config.optim.questions_per_image = 2;
    let mut trainer = Trainer::new(config, false).unwrap();
    let before = trainer.eval_loss().unwrap();
    trainer.run(&mut |_| {}).unwrap();
    assert!(trainer.eval_loss().unwrap() < before, "held-out loss rose from {before}");
    let pipeline = crate::pipeline::Pipeline::load(&out, &Default::default()).unwrap();
    assert_eq!(pipeline.model.info().model_type, "qwen2_5_vl");
    computes_as_trained(&trainer, &pipeline);
    let _ = std::fs::remove_dir_all(&out);
}

/// A base that cannot be taught its answers is named: one without a chat template, and one
/// whose template ends a turn with no end token and whose folder names no EOS.
#[test]
fn a_base_without_template_or_eos_is_named() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let base = scratch("llava-bare");
    std::fs::create_dir_all(&base).unwrap();
    for entry in std::fs::read_dir(root.join(BASE)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, base.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::remove_file(base.join("generation_config.json")).unwrap();
    let config = std::fs::read_to_string(base.join("config.json")).unwrap();
    std::fs::write(base.join("config.json"), config.replace("\"eos_token_id\": 2,", "")).unwrap();
    let out = scratch("llava-bare-ft");
    let mut config = llava(&out, 1);
    config.base = Some(base.clone());
    let message = Trainer::new(config.clone(), false).unwrap().eval_loss().unwrap_err().to_string();
    assert!(message.contains("the model folder names no end-of-sequence token"), "{message}");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::remove_file(base.join("chat_template.jinja")).unwrap();
    let message = Trainer::new(config, false).err().expect("no template must be refused").to_string();
    assert!(message.contains("no chat template"), "{message}");
    assert!(!out.exists(), "a refused run wrote its folder");
    let _ = std::fs::remove_dir_all(&base);
}
