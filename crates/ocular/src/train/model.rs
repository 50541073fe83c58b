//! What the trainer needs of a model family: its inference interface (prompt preparation,
//! tokenizer, grounding idiom), plus a forward pass over a packed sequence with the caller's
//! positions and attention mask (see `train::batch`). Each family implements it in a few lines
//! over its own packed forward pass; the auxiliary heads, which read Qwen2-VL's merged grid,
//! reach that family through [`TrainModel::as_qwen2_vl`].

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

use super::config::TrainConfig;
use super::scenes::Task;
use crate::error::{Error, Result};
use crate::load::{ModelDir, WeightIndex};
use crate::models::llava::Llava;
use crate::models::qwen2_vl::Qwen2Vl;
use crate::models::{Prepared, VisionLanguageModel};

/// The families `ocular train` can fine-tune (by `model_type`).
pub const TRAINABLE: &[&str] = &["llava", "qwen2_vl", "qwen2_5_vl"];

pub trait TrainModel: VisionLanguageModel {
    /// Each token's rotary position when `input` is run alone, as (time, height, width); a
    /// family with 1-D positions gives its position three times.
    fn positions(&self, input: &Prepared) -> Result<Vec<[i64; 3]>>;

    /// The tokens that stand for image or video features in a prepared prompt.
    fn media_token_ids(&self) -> Vec<u32>;

    /// f32 logits (rows, vocab) at `rows` of the packed `input`, each predicting the token
    /// after it; and each `taps` layer's output stream (seq, hidden). Without `train_vision`
    /// backward skips the vision tower.
    fn logits_packed_tapped(
        &self,
        input: &Prepared,
        positions: &[[i64; 3]],
        mask: &Tensor,
        rows: &[u32],
        train_vision: bool,
        taps: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)>;

    /// Whether a weight belongs to the part `optim.vision_lr_scale` scales.
    fn is_vision_tower(&self, name: &str) -> bool;

    fn device(&self) -> &Device;

    /// The model as Qwen2-VL, for the auxiliary heads that only that family has.
    fn as_qwen2_vl(&self) -> Option<&Qwen2Vl> {
        None
    }
}

impl TrainModel for Qwen2Vl {
    fn positions(&self, input: &Prepared) -> Result<Vec<[i64; 3]>> {
        Ok(self.position_ids(input)?.0)
    }

    fn media_token_ids(&self) -> Vec<u32> {
        vec![self.config().image_token_id, self.config().video_token_id]
    }

    fn logits_packed_tapped(
        &self,
        input: &Prepared,
        positions: &[[i64; 3]],
        mask: &Tensor,
        rows: &[u32],
        train_vision: bool,
        taps: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        Qwen2Vl::logits_packed_tapped(self, input, positions, mask, rows, train_vision, taps)
    }

    fn is_vision_tower(&self, name: &str) -> bool {
        Qwen2Vl::is_vision_tower(self, name)
    }

    fn device(&self) -> &Device {
        Qwen2Vl::device(self)
    }

    fn as_qwen2_vl(&self) -> Option<&Qwen2Vl> {
        Some(self)
    }
}

impl TrainModel for Llava {
    fn positions(&self, input: &Prepared) -> Result<Vec<[i64; 3]>> {
        Ok((0..input.ids.len() as i64).map(|p| [p; 3]).collect())
    }

    fn media_token_ids(&self) -> Vec<u32> {
        vec![self.image_token_id()]
    }

    fn logits_packed_tapped(
        &self,
        input: &Prepared,
        positions: &[[i64; 3]],
        mask: &Tensor,
        rows: &[u32],
        train_vision: bool,
        taps: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let positions: Vec<i64> = positions.iter().map(|p| p[0]).collect();
        Llava::logits_packed_tapped(self, input, &positions, mask, rows, train_vision, taps)
    }

    fn is_vision_tower(&self, name: &str) -> bool {
        Llava::is_vision_tower(self, name)
    }

    fn device(&self) -> &Device {
        Llava::device(self)
    }
}

/// The model of folder `dir` on `vb`'s variables. With `base`, the folder is a model to
/// fine-tune: the variables are named as its weights are, whose index is returned; without,
/// a new Qwen2-VL model's folder, named as transformers 5 names it. A family the trainer
/// cannot train is refused before its weights are read.
pub fn build(dir: &ModelDir, base: bool, vb: VarBuilder) -> Result<(Box<dyn TrainModel>, Option<WeightIndex>)> {
    let config = dir.config()?;
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
    if !TRAINABLE.contains(&model_type.as_str()) {
        return Err(unsupported(dir, &model_type));
    }
    let names = base.then(|| WeightIndex::read(dir.weight_files()?)).transpose()?;
    let model: Box<dyn TrainModel> = match (model_type.as_str(), &names) {
        ("llava", Some(names)) => Box::new(Llava::on_weights(dir, config, names, vb)?.0),
        ("llava", None) => return Err(Error::Invalid("a LLaVA model is fine-tuned from a base; set `base`".into())),
        _ => Box::new(Qwen2Vl::on_weights(dir, config, names.as_ref(), vb)?.0),
    };
    Ok((model, names))
}

/// A base `ocular train` cannot fine-tune, named by its `model_type`.
fn unsupported(dir: &ModelDir, found: &str) -> Error {
    let found = if found.is_empty() { "no model_type".to_string() } else { format!("model_type \"{found}\"") };
    Error::model_file(
        dir.path("config.json"),
        format!("{found}: `ocular train` fine-tunes {} models only", TRAINABLE.join(", ")),
    )
}

/// `config` with its data's tasks fitted to `model`: an empty list (every task) becomes every
/// task the family can learn (no videos for one that takes none, no boxes for one without a
/// grounding idiom); a task listed that it cannot learn is an error naming it.
pub fn fit_tasks(mut config: TrainConfig, model: &dyn TrainModel) -> Result<TrainConfig> {
    let can = |task: Task| match task {
        Task::Video => model.takes_video(),
        Task::Grounding => model.grounding_prompt("x").is_some(),
        _ => true,
    };
    if let Some(task) = config.data.tasks.iter().find(|&&t| !can(t)) {
        return Err(Error::Invalid(format!(
            "data.tasks: a {} model cannot learn the {} task ({})",
            model.info().model_type,
            task.name(),
            if *task == Task::Video { "it takes no videos" } else { "it has no box format" }
        )));
    }
    if config.data.tasks.is_empty() && !Task::ALL.iter().all(|&t| can(t)) {
        config.data.tasks = Task::ALL.into_iter().filter(|&t| can(t)).collect();
    }
    Ok(config)
}
