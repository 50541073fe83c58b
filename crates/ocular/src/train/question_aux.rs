//! The question steps' own auxiliary losses, each read from a tap of the language model's
//! stream after some of its layers: the position head's on the image tokens
//! (`train::position`), the object box head's on those an answer's object covers
//! (`train::object_box`), the pointer's on the attention of one head (`train::pointer`) and
//! the inventory head's on each image's end token (`train::inventory`). Always in that
//! order: the taps asked for, the parts returned and the weights.

use candle_core::Tensor;

use super::batch::Sample;
use super::config::TrainConfig;
use super::heads::Heads;
use super::inventory::InventoryHead;
use super::object_box::BoxHead;
use super::parallel::Part;
use super::pointer;
use super::position::PositionHead;
use crate::error::Result;
use crate::models::qwen2_vl::Qwen2Vl;
use crate::models::MediaKind;

/// How many auxiliary losses there are (asked for or not).
pub const AUX_LOSSES: usize = 4;

/// The auxiliary losses a run asks for, and the layers whose output stream they read.
pub struct QuestionAux<'a> {
    config: &'a TrainConfig,
    position: Option<&'a PositionHead>,
    object_box: Option<&'a BoxHead>,
    pointer_layer: Option<usize>,
    inventory: Option<&'a InventoryHead>,
}

impl<'a> QuestionAux<'a> {
    /// The losses `config` asks for, with `heads`' trained heads; none without `on`.
    pub fn new(config: &'a TrainConfig, heads: &'a Heads, on: bool) -> Self {
        let o = &config.optim;
        Self {
            config,
            position: heads.position.as_ref().filter(|_| on).map(|(h, _)| h),
            object_box: heads.object_box.as_ref().filter(|_| on).map(|(h, _)| h),
            pointer_layer: (on && o.pointer_layer > 0).then_some(o.pointer_layer),
            inventory: heads.inventory.as_ref().filter(|_| on).map(|(h, _)| h),
        }
    }

    /// Each asked-for loss's weight, in this module's order; `None` where not asked.
    pub fn weights(config: &TrainConfig, heads: &Heads) -> [Option<f64>; AUX_LOSSES] {
        let o = &config.optim;
        [
            heads.position.as_ref().map(|_| o.position_weight),
            heads.object_box.as_ref().map(|_| o.box_weight),
            (o.pointer_layer > 0).then_some(o.pointer_weight),
            heads.inventory.as_ref().map(|_| o.inventory_weight),
        ]
    }

    /// The layers whose output stream the forward pass must hand back, in order.
    pub fn taps(&self) -> Vec<usize> {
        self.position
            .map(PositionHead::layer)
            .into_iter()
            .chain(self.object_box.map(BoxHead::layer))
            .chain(self.pointer_layer)
            .chain(self.inventory.map(InventoryHead::layer))
            .collect()
    }

    /// The losses on sample `s` from the streams `tapped` (those of [`Self::taps`], in its
    /// order); `None` where not asked or where the sample gives it nothing to learn.
    pub fn parts(&self, model: &Qwen2Vl, s: &Sample, tapped: Vec<Tensor>) -> Result<[Option<Part>; AUX_LOSSES]> {
        let o = &self.config.optim;
        let mut tapped = tapped.into_iter();
        let position = match (self.position, self.position.and_then(|_| tapped.next())) {
            (Some(head), Some(stream)) => {
                let merge = model.config().vision.merge_size;
                let grids: Vec<[usize; 2]> = s
                    .prepared
                    .media
                    .iter()
                    .filter(|m| m.kind == MediaKind::Image)
                    .map(|m| [m.grid_thw[1] / merge, m.grid_thw[2] / merge])
                    .collect();
                head.part(&stream, &s.prepared.ids, model.config().image_token_id, &grids)?
            }
            _ => None,
        };
        let object_box = match (self.object_box, self.object_box.and_then(|_| tapped.next())) {
            (Some(head), Some(stream)) => head.part(&stream, &s.boxes)?,
            _ => None,
        };
        let pointers = pointer::supervised(&s.pointers, o);
        let pointer = match (self.pointer_layer, self.pointer_layer.and_then(|_| tapped.next())) {
            (Some(layer), Some(entering)) if !pointers.is_empty() => {
                let queries: Vec<u32> = pointers.iter().flat_map(|p| p.queries.iter().copied()).collect();
                let weights = model.attention_weights_packed(layer, &entering, &s.positions, &s.mask, &queries)?;
                pointer::part(&weights, &pointers, o.pointer_head, o.pointer_tally)?
            }
            _ => None,
        };
        let inventory = match (self.inventory, self.inventory.and_then(|_| tapped.next())) {
            (Some(head), Some(stream)) => head.part(&stream, &s.inventories)?,
            _ => None,
        };
        Ok([position, object_box, pointer, inventory])
    }
}
