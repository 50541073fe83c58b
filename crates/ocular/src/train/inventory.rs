//! What each image holds, gathered by the language model into one place. Counting and
//! existence questions ("how many stars?", "is there a red circle?") and comparisons of two
//! images need a tally of the whole image, and "0" or "no" needs the absence of a match,
//! which attention (a weighted mean of what it finds) cannot see. The vision tower, trained
//! to hold that tally at every token (`[dense] inventory`), barely learned it: in a 4-layer
//! tower, shape appears only in the last layers, leaving none to pool it. The language model
//! reads the tower's finished features, so with `[optim] inventory_layer = k` a throwaway
//! linear head on its stream after its first `k` layers learns, at each image's
//! `<|vision_end|>` token (which follows, and may look at, every token of its image), how many
//! objects of each shape and each colour the image holds and whether each colour-shape pair is
//! there: a fixed place where the answers can read it. Trained on question steps with the
//! answers and dropped from the saved folder, like the other heads.

use candle_core::Tensor;
use candle_nn::{Linear, Module, VarBuilder};

use super::dense::{inventory_classes, COUNT_CLASSES, INVENTORY_COUNTS, INVENTORY_PAIRS};
use super::loss::{add_parts, summed_ce};
use super::parallel::Part;
use super::scenes::Scene;
use crate::error::{Error, Result};

/// One image's tally at its end token: that token's row of the packed sequence, the count
/// class of each shape then each colour, and whether each colour-shape pair is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub row: u32,
    pub counts: Vec<u32>,
    pub pairs: Vec<u32>,
}

/// The tallies of `scenes`, one per image, at the image end tokens (`end_token`) of `ids` in
/// order; `scenes` must be the images the sequence holds, as many as its end tokens.
pub fn inventories(ids: &[u32], end_token: u32, scenes: &[Scene]) -> Result<Vec<Inventory>> {
    let rows: Vec<u32> = (0..ids.len() as u32).filter(|&i| ids[i as usize] == end_token).collect();
    if rows.len() != scenes.len() {
        return Err(Error::Invalid(format!(
            "inventory labels: the sequence holds {} image end tokens for {} scenes",
            rows.len(),
            scenes.len()
        )));
    }
    Ok(rows
        .into_iter()
        .zip(scenes)
        .map(|(row, scene)| {
            let (counts, pairs) = inventory_classes(scene);
            Inventory { row, counts, pairs }
        })
        .collect())
}

pub struct InventoryHead {
    linear: Linear,
    layer: usize,
}

impl InventoryHead {
    /// Variables under `inventory_head` in `vb`, reading the stream after `layer` layers.
    pub fn new(vb: VarBuilder, hidden: usize, layer: usize) -> Result<Self> {
        let columns = INVENTORY_COUNTS * COUNT_CLASSES + INVENTORY_PAIRS * 2;
        Ok(Self { linear: candle_nn::linear(hidden, columns, vb.pp("inventory_head"))?, layer })
    }

    /// How many of the language model's layers run before the head reads the stream.
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// The summed cross-entropy of every count and presence label of `labels`, read from
    /// `tapped` (seq, hidden); `None` without labels.
    pub fn part(&self, tapped: &Tensor, labels: &[Inventory]) -> Result<Option<Part>> {
        if labels.is_empty() {
            return Ok(None);
        }
        let rows: Vec<u32> = labels.iter().map(|l| l.row).collect();
        let counts: Vec<u32> = labels.iter().flat_map(|l| l.counts.iter().copied()).collect();
        let pairs: Vec<u32> = labels.iter().flat_map(|l| l.pairs.iter().copied()).collect();
        let logits = self.linear.forward(tapped)?;
        let count_columns = INVENTORY_COUNTS * COUNT_CLASSES;
        add_parts(vec![
            summed_ce(&logits, &rows, 0, INVENTORY_COUNTS, COUNT_CLASSES, &counts)?,
            summed_ce(&logits, &rows, count_columns, INVENTORY_PAIRS, 2, &pairs)?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::train::scenes::{scene, SceneConfig, Shape};

    #[test]
    fn each_image_end_token_learns_its_own_scene_s_tally() {
        const END: u32 = 9;
        let mut rng = Rng::seed_from_u64(3);
        let scenes: Vec<Scene> = (0..2).map(|_| scene(&mut rng, &SceneConfig::default())).collect();
        let ids = [1, 5, 5, END, 2, 5, END, 3];
        let labels = inventories(&ids, END, &scenes).unwrap();
        assert_eq!(labels.iter().map(|l| l.row).collect::<Vec<_>>(), vec![3, 6]);
        for (label, scene) in labels.iter().zip(&scenes) {
            // The first count is the number of circles; pairs are colour-major, present or not.
            let circles = scene.objects.iter().filter(|o| o.shape == Shape::ALL[0]).count() as u32;
            assert_eq!(label.counts[0], circles);
            assert_eq!(label.counts.len(), INVENTORY_COUNTS);
            assert_eq!(label.pairs.iter().sum::<u32>() as usize, scene.objects.len(), "names are unique in a scene");
        }
        let e = inventories(&ids, END, &scenes[..1]).unwrap_err().to_string();
        assert!(e.contains("2 image end tokens for 1 scenes"), "{e}");
    }

    #[test]
    fn the_loss_sums_every_label_of_every_image() {
        let hidden = 4;
        let vars = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, candle_core::DType::F32, &candle_core::Device::Cpu);
        let head = InventoryHead::new(vb, hidden, 1).unwrap();
        crate::train::weights::init_weights(&vars, 1).unwrap();
        let tapped = Tensor::zeros((5, hidden), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        assert!(head.part(&tapped, &[]).unwrap().is_none());
        let label = Inventory { row: 2, counts: vec![1; INVENTORY_COUNTS], pairs: vec![0; INVENTORY_PAIRS] };
        let part = head.part(&tapped, &[label.clone(), Inventory { row: 4, ..label }]).unwrap().unwrap();
        assert_eq!(part.count, (2 * (INVENTORY_COUNTS + INVENTORY_PAIRS)) as f64);
        // A zero stream reads the biases, which start at zero: every choice at chance.
        let chance = 2.0 * (INVENTORY_COUNTS as f32 * (COUNT_CLASSES as f32).ln() + INVENTORY_PAIRS as f32 * 2f32.ln());
        assert!((part.sum.to_scalar::<f32>().unwrap() - chance).abs() < 1e-3, "{}", part.sum);
    }
}
