//! The throwaway heads a run trains beside the model: the dense head on the vision tokens
//! (`train::dense`; its box labels in a file of their own, so they can join a finished
//! warm-up), the position head on the language model's image tokens (`train::position`) and
//! the object box head on those an answer's object covers (`train::object_box`) and the
//! inventory head on each image's end token (`train::inventory`).
//! Each keeps its variables in a map of its own, saved with checkpoints and left out of the
//! finished model folder.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use super::config::TrainConfig;
use super::dense::DenseHead;
use super::inventory::InventoryHead;
use super::model::TrainModel;
use super::object_box::BoxHead;
use super::pointer;
use super::position::PositionHead;
use super::weights::{init_weights, load_into};
use crate::error::{Error, Result};
use crate::models::qwen2_vl::Qwen2Vl;

/// The dense head's variables in a checkpoint.
pub const DENSE_HEAD_FILE: &str = "dense_head.safetensors";
/// The dense box head's variables in a checkpoint.
pub const BOX_HEAD_FILE: &str = "box_head.safetensors";
/// The position head's variables in a checkpoint.
pub const POSITION_HEAD_FILE: &str = "position_head.safetensors";
/// The object box head's variables in a checkpoint.
pub const OBJECT_BOX_HEAD_FILE: &str = "object_box_head.safetensors";
/// The inventory head's variables in a checkpoint.
pub const INVENTORY_HEAD_FILE: &str = "inventory_head.safetensors";

pub struct Heads {
    pub dense: Option<(DenseHead, VarMap)>,
    /// With `[dense] boxes`, the dense head's box part's variables.
    pub boxes: Option<VarMap>,
    pub position: Option<(PositionHead, VarMap)>,
    pub object_box: Option<(BoxHead, VarMap)>,
    pub inventory: Option<(InventoryHead, VarMap)>,
}

impl Heads {
    /// The heads `config` asks for, read from `checkpoint` when resuming, else seeded. The
    /// position and object box heads train on question steps only, so a warm-up checkpoint
    /// may lack them: they then start seeded (see [`Self::fresh`]).
    fn new(config: &TrainConfig, model: &Qwen2Vl, checkpoint: Option<&Path>) -> Result<Self> {
        let hidden = model.config().text.hidden_size;
        let (mut dense, mut boxes) = (None, None);
        if config.dense.enabled() {
            let vars = VarMap::new();
            let box_vars = config.dense.boxes.then(VarMap::new);
            let head = DenseHead::new(builder(&vars), box_vars.as_ref().map(builder), hidden, &config.dense)?;
            fill(&vars, checkpoint, DENSE_HEAD_FILE, false, config.seed)?;
            if let Some(box_vars) = &box_vars {
                fill(box_vars, checkpoint, BOX_HEAD_FILE, true, config.seed)?;
            }
            (dense, boxes) = (Some((head, vars)), box_vars);
        }
        let layers = model.config().text.num_hidden_layers;
        // A head on the language model's stream after `layer` of its layers (`field` names it in
        // errors): built first, so that its variables exist, then read from the checkpoint
        // (optional there) or seeded.
        fn stream_head<H>(
            field: &str,
            layer: usize,
            layers: usize,
            file: &str,
            fill_from: (Option<&Path>, u64),
            build: impl FnOnce(VarBuilder) -> Result<H>,
        ) -> Result<Option<(H, VarMap)>> {
            match layer {
                0 => Ok(None),
                layer if layer > layers => {
                    Err(Error::Invalid(format!("optim.{field} {layer} is past the language model's {layers} layers")))
                }
                _ => {
                    let vars = VarMap::new();
                    let head = build(builder(&vars))?;
                    fill(&vars, fill_from.0, file, true, fill_from.1)?;
                    Ok(Some((head, vars)))
                }
            }
        }
        let (o, from) = (&config.optim, (checkpoint, config.seed));
        let position = stream_head("position_layer", o.position_layer, layers, POSITION_HEAD_FILE, from, |vb| {
            PositionHead::new(vb, hidden, o.position_layer)
        })?;
        let object_box = stream_head("box_layer", o.box_layer, layers, OBJECT_BOX_HEAD_FILE, from, |vb| {
            BoxHead::new(vb, hidden, o.box_layer)
        })?;
        let inventory = stream_head("inventory_layer", o.inventory_layer, layers, INVENTORY_HEAD_FILE, from, |vb| {
            InventoryHead::new(vb, hidden, o.inventory_layer)
        })?;
        Ok(Self { dense, boxes, position, object_box, inventory })
    }

    /// The heads `config` asks for `model`: only a Qwen2-VL model has the merged vision grid
    /// they read, so for another family any head asked for is an error naming its setting.
    pub fn for_model(config: &TrainConfig, model: &dyn TrainModel, checkpoint: Option<&Path>) -> Result<Self> {
        if let Some(qwen) = model.as_qwen2_vl() {
            let text = &qwen.config().text;
            pointer::check(&config.optim, text.num_hidden_layers, text.num_attention_heads)?;
            return Self::new(config, qwen, checkpoint);
        }
        if let Some(setting) = config.first_head_setting() {
            return Err(Error::Invalid(format!(
                "{setting}: the auxiliary heads and the dense warm-up are for Qwen2-VL models; a {} base trains on its answers only",
                model.info().model_type
            )));
        }
        Ok(Self { dense: None, boxes: None, position: None, object_box: None, inventory: None })
    }

    /// Every head's variables.
    pub fn var_maps(&self) -> impl Iterator<Item = &VarMap> {
        self.dense
            .iter()
            .map(|(_, v)| v)
            .chain(&self.boxes)
            .chain(self.position.iter().map(|(_, v)| v))
            .chain(self.object_box.iter().map(|(_, v)| v))
            .chain(self.inventory.iter().map(|(_, v)| v))
    }

    /// The question-step heads (variable prefix, file) that a resume from `checkpoint` starts
    /// fresh, the checkpoint lacking them.
    pub fn fresh(&self, checkpoint: &Path) -> Vec<(&'static str, &'static str)> {
        [
            (self.position.is_some(), "position_head", POSITION_HEAD_FILE),
            (self.object_box.is_some(), "object_box_head", OBJECT_BOX_HEAD_FILE),
            (self.inventory.is_some(), "inventory_head", INVENTORY_HEAD_FILE),
        ]
        .into_iter()
        .filter(|&(wanted, _, file)| wanted && !checkpoint.join(file).is_file())
        .map(|(_, prefix, file)| (prefix, file))
        .collect()
    }

    /// Whether a box head resumed from `checkpoint` starts fresh (the checkpoint lacks it).
    pub fn fresh_boxes(&self, checkpoint: &Path) -> bool {
        self.boxes.is_some() && !checkpoint.join(BOX_HEAD_FILE).is_file()
    }

    /// Each head's variables into the checkpoint folder `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        if let Some((_, vars)) = &self.dense {
            vars.save(dir.join(DENSE_HEAD_FILE))?;
        }
        if let Some(vars) = &self.boxes {
            vars.save(dir.join(BOX_HEAD_FILE))?;
        }
        if let Some((_, vars)) = &self.position {
            vars.save(dir.join(POSITION_HEAD_FILE))?;
        }
        if let Some((_, vars)) = &self.object_box {
            vars.save(dir.join(OBJECT_BOX_HEAD_FILE))?;
        }
        if let Some((_, vars)) = &self.inventory {
            vars.save(dir.join(INVENTORY_HEAD_FILE))?;
        }
        Ok(())
    }
}

fn builder(vars: &VarMap) -> VarBuilder<'_> {
    VarBuilder::from_varmap(vars, DType::F32, &Device::Cpu)
}

/// Sets a new head's variables: from `checkpoint`'s `file` when resuming (an `optional` head
/// missing there starts seeded instead; a required one is an error naming the file), else
/// seeded.
fn fill(vars: &VarMap, checkpoint: Option<&Path>, file: &str, optional: bool, seed: u64) -> Result<()> {
    match checkpoint.map(|c| c.join(file)) {
        Some(path) if !optional || path.is_file() => load_into(vars, &[path]),
        _ => init_weights(vars, seed),
    }
}
