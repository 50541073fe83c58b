//! Dense supervision of the vision tower. Answers alone give a small vision tower trained from
//! scratch almost no signal about shape: the language model must first learn to look, and it
//! cannot learn to look at features that do not yet tell a square from a circle. So a
//! throwaway linear head reads every merged vision token (exactly what the language model
//! receives) and learns, from the scene's layout, the colour of the object under the token
//! (or background) and, at the token holding each object's centre, the object's shape. The
//! head is trained with the model and dropped from the saved folder.
//!
//! With `[dense] centres`, the labels also mark where objects are, which counting, relations
//! and captions need: every token learns whether an object's centre lies in it (the shape
//! classes gain a "no centre" class), a centre token learns its object's size, and its colour
//! is its object's even when the object covers little of it.
//!
//! With `[dense] covered`, shape and size are labelled at every token an object covers (and at
//! its centre token), not only at the centre: a language model that must find "the square"
//! attends by what a token says, and measured here it found objects by colour (labelled at
//! every covered token) but not by shape (labelled at one token).
//!
//! With `[dense] relations`, wherever an object's shape is labelled the token also learns, for
//! each relation a question can ask (left of, right of, above, below, nearest, farthest), the
//! colour and shape of the object standing in it, or "none". The vision tower sees the whole
//! image at once and in two dimensions, where comparing positions is local work; the language
//! model then only has to find the anchor object and read its answer off its tokens.

use candle_core::{Device, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};

mod labels;

use labels::{
    count_classes, object_tokens, relation_classes, shape_class, size_class, COLOUR_CLASSES, COUNT_CLASSES, NO_CENTRE,
};
pub use labels::{token_labels, Centre, TokenLabels};

use super::parallel::Part;
use super::scenes::{scene, Relation, Rng, Scene, SceneConfig, Shape, Size};
use crate::error::Result;
use crate::models::qwen2_vl::Qwen2Vl;

/// `n` scenes for dense step `step`, drawn from their own stream so any step can be redone.
pub fn scenes(seed: u64, step: u64, config: &SceneConfig, n: usize) -> Vec<Scene> {
    let mut rng = Rng::seed_from_u64(seed ^ 0xD3E5_E000_0000_0000 ^ step.wrapping_mul(0x2545_F491_4F6C_DD1D));
    (0..n).map(|_| scene(&mut rng, config)).collect()
}

/// What the dense head labels besides every token's colour (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseLabels {
    /// Shape at each object's centre token.
    Centre,
    /// Also "no centre" at every other token, and size at centre tokens.
    Centres,
    /// Shape and size at every token an object covers and at its centre token.
    Covered,
}

/// One dense step's loss parts, as reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DenseParts {
    pub colour: f32,
    /// At the tokens that carry a shape label; zero when no scene held an object.
    pub shape: f32,
    /// With centre labels: "no centre" at every token without an object's centre.
    pub elsewhere: Option<f32>,
    /// With centre or covered labels, where shape is labelled.
    pub size: Option<f32>,
    /// With relation labels: per relation's colour or shape, where shape is labelled.
    pub relation: Option<f32>,
    /// With count labels: the objects in the image, and those of the token's object's shape
    /// and of its colour.
    pub count: Option<f32>,
}

impl DenseParts {
    /// From the means of the parts [`DenseHead::parts`] gives, in its order.
    pub fn from_means(means: &[Option<f32>]) -> Self {
        let at = |k: usize| means.get(k).copied().flatten();
        Self {
            colour: at(0).unwrap_or(0.0),
            shape: at(1).unwrap_or(0.0),
            elsewhere: at(2),
            size: at(3),
            relation: at(4),
            count: at(5),
        }
    }
}

/// Colour classes then shape classes, both with "none", for each relation.
const RELATION_CLASSES: usize = COLOUR_CLASSES + Shape::ALL.len() + 1;

/// The throwaway head: one linear map from a merged token to colour and shape logits (and,
/// with centre labels, a "no centre" shape class; with centre or covered labels, size logits;
/// with relation labels, the colour and shape of each relation's object; with count labels,
/// three counts).
pub struct DenseHead {
    linear: Linear,
    labels: DenseLabels,
    relations: bool,
    counts: bool,
}

impl DenseHead {
    /// Variables under `dense_head` in `vb` (kept out of the model's own weights).
    pub fn new(vb: VarBuilder, hidden: usize, labels: DenseLabels, relations: bool, counts: bool) -> Result<Self> {
        let extra = match labels {
            DenseLabels::Centre => 0,
            DenseLabels::Centres => 1 + Size::ALL.len(),
            DenseLabels::Covered => Size::ALL.len(),
        };
        let classes = COLOUR_CLASSES
            + Shape::ALL.len()
            + extra
            + if relations { Relation::ALL.len() * RELATION_CLASSES } else { 0 }
            + if counts { 3 * COUNT_CLASSES } else { 0 };
        Ok(Self { linear: candle_nn::linear(hidden, classes, vb.pp("dense_head"))?, labels, relations, counts })
    }

    /// How many parts [`Self::parts`] gives: colour, shape, "no centre", size, relation and
    /// count (`None` where the labels lack them).
    pub fn part_count(&self) -> usize {
        6
    }

    /// `scene` rendered and encoded as the model sees it, and its loss parts as sums (the step
    /// takes their means over a batch): colour cross-entropy over every token, shape over the
    /// centre tokens (with covered labels, also every covered token); with centre labels,
    /// "no centre" over the other tokens; size, and each relation's colour and shape, where
    /// shape is labelled; the object count at every token, and the counts of the token's
    /// object's shape and colour where shape is labelled. A part without tokens (or that the
    /// labels lack) is `None`.
    pub fn parts(&self, model: &Qwen2Vl, scene: &Scene) -> Result<Vec<Option<Part>>> {
        let (tokens, grids) = model.image_tokens(&[scene.render()])?;
        let mut labels = token_labels(scene, grids[0]);
        let centres = self.labels == DenseLabels::Centres;
        if self.labels != DenseLabels::Centre {
            for centre in &labels.centres {
                labels.colours[centre.token] = centre.colour;
            }
        }
        let dev: &Device = tokens.device();
        let logits = self.linear.forward(&tokens)?;
        let shape_classes = Shape::ALL.len() + usize::from(centres);
        let summed_ce = |rows: &[u32], first: usize, classes: usize, targets: &[u32]| -> Result<Option<Part>> {
            if rows.is_empty() {
                return Ok(None);
            }
            let picked = logits.index_select(&Tensor::new(rows, dev)?, 0)?.narrow(1, first, classes)?;
            let nll = candle_nn::ops::log_softmax(&picked, D::Minus1)?
                .gather(&Tensor::new(targets, dev)?.unsqueeze(1)?, 1)?
                .neg()?
                .sum_all()?;
            Ok(Some(Part { sum: nll, count: rows.len() as f64 }))
        };
        let all: Vec<u32> = (0..labels.colours.len() as u32).collect();
        let centre_rows: Vec<u32> = labels.centres.iter().map(|c| c.token as u32).collect();
        let shaped = object_tokens(&labels, self.labels == DenseLabels::Covered);
        let rows: Vec<u32> = shaped.iter().map(|s| s.0).collect();
        let of_object = |f: &dyn Fn(usize) -> u32| -> Vec<u32> { shaped.iter().map(|&(_, k)| f(k)).collect() };
        let shapes = of_object(&|k| shape_class(scene.objects[k].shape));
        let mut parts = vec![
            summed_ce(&all, 0, COLOUR_CLASSES, &labels.colours)?,
            summed_ce(&rows, COLOUR_CLASSES, shape_classes, &shapes)?,
            None,
            None,
            None,
            None,
        ];
        if centres {
            let others: Vec<u32> = all.iter().copied().filter(|r| !centre_rows.contains(r)).collect();
            parts[2] = summed_ce(&others, COLOUR_CLASSES, shape_classes, &vec![NO_CENTRE; others.len()])?;
        }
        let mut first = COLOUR_CLASSES + shape_classes;
        if self.labels != DenseLabels::Centre {
            let sizes = of_object(&|k| size_class(scene.objects[k].size));
            parts[3] = summed_ce(&rows, first, Size::ALL.len(), &sizes)?;
            first += Size::ALL.len();
        }
        if self.relations {
            let related: Vec<[(u32, u32); 6]> = (0..scene.objects.len()).map(|k| relation_classes(scene, k)).collect();
            let mut each = vec![];
            for r in 0..Relation::ALL.len() {
                let at = first + r * RELATION_CLASSES;
                each.push(summed_ce(&rows, at, COLOUR_CLASSES, &of_object(&|k| related[k][r].0))?);
                each.push(summed_ce(
                    &rows,
                    at + COLOUR_CLASSES,
                    Shape::ALL.len() + 1,
                    &of_object(&|k| related[k][r].1),
                )?);
            }
            parts[4] = add_parts(each)?;
            first += Relation::ALL.len() * RELATION_CLASSES;
        }
        if self.counts {
            let counts: Vec<[u32; 3]> = (0..scene.objects.len()).map(|k| count_classes(scene, k)).collect();
            let same_shape = of_object(&|k| counts[k][1]);
            let same_colour = of_object(&|k| counts[k][2]);
            // The image's object count, the same at every token (and for every object).
            let in_image = count_classes(scene, 0)[0];
            parts[5] = add_parts(vec![
                summed_ce(&all, first, COUNT_CLASSES, &vec![in_image; all.len()])?,
                summed_ce(&rows, first + COUNT_CLASSES, COUNT_CLASSES, &same_shape)?,
                summed_ce(&rows, first + 2 * COUNT_CLASSES, COUNT_CLASSES, &same_colour)?,
            ])?;
        }
        Ok(parts)
    }
}

/// One part summing `parts` (`None` where all are).
fn add_parts(parts: Vec<Option<Part>>) -> Result<Option<Part>> {
    let mut total: Option<Part> = None;
    for part in parts.into_iter().flatten() {
        total = Some(match total {
            Some(t) => Part { sum: (t.sum + part.sum)?, count: t.count + part.count },
            None => part,
        });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_scenes_are_deterministic_per_step() {
        let config = SceneConfig::default();
        assert_eq!(scenes(1, 5, &config, 3), scenes(1, 5, &config, 3));
        assert_ne!(scenes(1, 5, &config, 3), scenes(1, 6, &config, 3));
    }
}
