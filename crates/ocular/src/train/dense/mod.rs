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
//! model then only has to find the anchor object and read its answer off its tokens. Questions
//! are asked only where an object clearly stands in the relation; with `relations_none = false`
//! only those rows are labelled, so the head does not spend itself on "none".
//!
//! With `[dense] inventory`, every token learns what the whole image holds: how many objects
//! of each shape and each colour, and whether each colour-shape pair is present. Count and
//! existence questions then read one token's answer instead of finding and tallying objects.
//!
//! With `[dense] boxes`, wherever an object's shape is labelled the token also learns the tenth
//! of the image's width and height holding each edge of the object's box: the first digits of
//! its grounding answer. Whether the vision tower can tell where in the image a token lies at
//! all is the question: its rotary positions are relative, so only the image's borders, as
//! seen from an object's tokens, say where the object is.
//!
//! With `[dense] videos`, each step also holds that many moving-object clips (the video task's
//! own). Qwen2-VL's vision tower sees a video two frames at a time (one temporal patch, each
//! attending only to itself), so each time step's tokens learn their colour and, wherever an
//! object covers them in either frame, its direction of motion or "still".

use candle_nn::{Linear, Module, VarBuilder};

mod labels;

pub(crate) use labels::{
    box_tenths, colours_with_centres, count_classes, inventory_classes, motion_labels, object_tokens, order_classes,
    relation_classes, shape_class, size_class, BACKGROUND, BOX_BINS, COLOUR_CLASSES, COUNT_CLASSES, INVENTORY_COUNTS,
    INVENTORY_PAIRS, NO_CENTRE,
};
pub use labels::{token_labels, Centre, TokenLabels};

use super::config::Dense;
use super::loss::{add_parts, summed_ce};
use super::parallel::Part;
use super::scenes::{moving_clip, scene, Direction, Relation, Rng, Scene, SceneConfig, Shape, Size};
use crate::error::Result;
use crate::models::qwen2_vl::Qwen2Vl;

/// What one dense item shows the vision tower.
#[derive(Debug, Clone, PartialEq)]
pub enum DenseItem {
    Image(Scene),
    /// A moving-object clip's frames (the mover first in each) and its direction.
    Video(Vec<Scene>, Direction),
}

/// `videos` clips and `images` scenes for dense step `step`, each drawn from its own stream so
/// any step can be redone (and the scenes do not depend on the clips). The clips, each several
/// frames, come first so that the threads start on them and finish the step together.
pub fn items(seed: u64, step: u64, config: &SceneConfig, images: usize, videos: usize) -> Vec<DenseItem> {
    let mix = step.wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut rng = Rng::seed_from_u64(seed ^ 0x71DE_0000_0000_0000 ^ mix);
    let mut out: Vec<DenseItem> = (0..videos)
        .map(|_| {
            let (frames, direction) = moving_clip(&mut rng, config);
            DenseItem::Video(frames, direction)
        })
        .collect();
    let mut rng = Rng::seed_from_u64(seed ^ 0xD3E5_E000_0000_0000 ^ mix);
    out.extend((0..images).map(|_| DenseItem::Image(scene(&mut rng, config))));
    out
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
    /// With inventory labels: each shape's and colour's count and each pair's presence.
    pub inventory: Option<f32>,
    /// With videos: the motion of the object under a video token.
    pub motion: Option<f32>,
    /// With order labels: the object's place in the caption and the next object's colour and
    /// shape, where shape is labelled.
    pub order: Option<f32>,
    /// With box labels: the tenths holding the edges of the token's object's box.
    pub boxes: Option<f32>,
}

/// The parts [`DenseHead::parts`] gives, in order.
const PARTS: usize = 10;
const COLOUR: usize = 0;
const SHAPE: usize = 1;
const ELSEWHERE: usize = 2;
const SIZE: usize = 3;
const RELATION: usize = 4;
const COUNT: usize = 5;
const INVENTORY: usize = 6;
const MOTION: usize = 7;
const ORDER: usize = 8;
const BOXES: usize = 9;

impl DenseParts {
    /// From the means of the parts [`DenseHead::parts`] gives, in its order.
    pub fn from_means(means: &[Option<f32>]) -> Self {
        let at = |k: usize| means.get(k).copied().flatten();
        Self {
            colour: at(COLOUR).unwrap_or(0.0),
            shape: at(SHAPE).unwrap_or(0.0),
            elsewhere: at(ELSEWHERE),
            size: at(SIZE),
            relation: at(RELATION),
            count: at(COUNT),
            inventory: at(INVENTORY),
            motion: at(MOTION),
            order: at(ORDER),
            boxes: at(BOXES),
        }
    }
}

/// Colour classes then shape classes, both with "none", for each relation.
const RELATION_CLASSES: usize = COLOUR_CLASSES + Shape::ALL.len() + 1;
/// Columns of the inventory labels: counts, then present or not per pair.
const INVENTORY_COLUMNS: usize = INVENTORY_COUNTS * COUNT_CLASSES + INVENTORY_PAIRS * 2;
/// Columns of the order labels: the place (as many as counts), the next object's colour and
/// shape (with "none").
const ORDER_COLUMNS: usize = COUNT_CLASSES + COLOUR_CLASSES + Shape::ALL.len() + 1;
/// A direction of [`Direction::ALL`] or still.
const MOTION_CLASSES: usize = Direction::ALL.len() + 1;

/// The throwaway head: one linear map from a merged token to the logits of every label the
/// config asks for: colour, shape, size, relations, counts, inventory, order, then motion.
pub struct DenseHead {
    linear: Linear,
    /// With box labels, their own head (see [`Dense::boxes`]).
    boxes: Option<Linear>,
    config: Dense,
    /// The first motion column: motion comes after every other label.
    motion_first: usize,
}

impl DenseHead {
    /// Variables under `dense_head` in `vb` (kept out of the model's own weights), and with
    /// box labels under `box_head` in `boxes_vb`.
    pub fn new(vb: VarBuilder, boxes_vb: Option<VarBuilder>, hidden: usize, config: &Dense) -> Result<Self> {
        let config = config.clone();
        let extra = match config.labels() {
            DenseLabels::Centre => 0,
            DenseLabels::Centres => 1 + Size::ALL.len(),
            DenseLabels::Covered => Size::ALL.len(),
        };
        let classes = COLOUR_CLASSES
            + Shape::ALL.len()
            + extra
            + if config.relations { Relation::ALL.len() * RELATION_CLASSES } else { 0 }
            + if config.counts { 3 * COUNT_CLASSES } else { 0 }
            + if config.inventory { INVENTORY_COLUMNS } else { 0 }
            + if config.order { ORDER_COLUMNS } else { 0 }
            + if config.videos > 0 { MOTION_CLASSES } else { 0 };
        let motion_first = classes.saturating_sub(MOTION_CLASSES);
        let boxes = match boxes_vb.filter(|_| config.boxes) {
            Some(vb) => Some(candle_nn::linear(hidden, 4 * BOX_BINS, vb.pp("box_head"))?),
            None => None,
        };
        Ok(Self { linear: candle_nn::linear(hidden, classes, vb.pp("dense_head"))?, boxes, config, motion_first })
    }

    /// How many parts [`Self::parts`] gives (`None` where the labels lack them).
    pub fn part_count(&self) -> usize {
        PARTS
    }

    /// `item` encoded as the model sees it, and its loss parts as sums (the step takes their
    /// means over a batch), in the order of [`DenseParts`]' fields. A part without tokens (or
    /// that the labels lack) is `None`.
    pub fn parts(&self, model: &Qwen2Vl, item: &DenseItem) -> Result<Vec<Option<Part>>> {
        match item {
            DenseItem::Image(scene) => self.image_parts(model, scene),
            DenseItem::Video(frames, direction) => self.video_parts(model, frames, *direction),
        }
    }

    /// Colour cross-entropy over every token, shape over the centre tokens (with covered
    /// labels, also every covered token); with centre labels, "no centre" over the other
    /// tokens; size, each relation's colour and shape, and the counts of the token's object's
    /// shape and colour where shape is labelled; the object count and the inventory at every
    /// token.
    fn image_parts(&self, model: &Qwen2Vl, scene: &Scene) -> Result<Vec<Option<Part>>> {
        let (tokens, grids) = model.image_tokens(&[scene.render()])?;
        let logits = self.linear.forward(&tokens)?;
        let labels = token_labels(scene, grids[0]);
        let kind = self.config.labels();
        let centres = kind == DenseLabels::Centres;
        let colours = if kind == DenseLabels::Centre { labels.colours.clone() } else { colours_with_centres(&labels) };
        let ce = |rows: &[u32], first: usize, groups: usize, classes: usize, targets: &[u32]| {
            summed_ce(&logits, rows, first, groups, classes, targets)
        };
        let all: Vec<u32> = (0..colours.len() as u32).collect();
        let shaped = object_tokens(&labels, kind == DenseLabels::Covered);
        let rows: Vec<u32> = shaped.iter().map(|s| s.0).collect();
        let of_object = |f: &dyn Fn(usize) -> u32| -> Vec<u32> { shaped.iter().map(|&(_, k)| f(k)).collect() };
        let shape_classes = Shape::ALL.len() + usize::from(centres);
        let mut parts: Vec<Option<Part>> = (0..PARTS).map(|_| None).collect();
        parts[COLOUR] = ce(&all, 0, 1, COLOUR_CLASSES, &colours)?;
        parts[SHAPE] =
            ce(&rows, COLOUR_CLASSES, 1, shape_classes, &of_object(&|k| shape_class(scene.objects[k].shape)))?;
        if centres {
            let centre_rows: Vec<u32> = labels.centres.iter().map(|c| c.token as u32).collect();
            let others: Vec<u32> = all.iter().copied().filter(|r| !centre_rows.contains(r)).collect();
            parts[ELSEWHERE] = ce(&others, COLOUR_CLASSES, 1, shape_classes, &vec![NO_CENTRE; others.len()])?;
        }
        let mut first = COLOUR_CLASSES + shape_classes;
        if kind != DenseLabels::Centre {
            parts[SIZE] = ce(&rows, first, 1, Size::ALL.len(), &of_object(&|k| size_class(scene.objects[k].size)))?;
            first += Size::ALL.len();
        }
        if self.config.relations {
            let related: Vec<[(u32, u32); 6]> = (0..scene.objects.len()).map(|k| relation_classes(scene, k)).collect();
            let mut each = vec![];
            for r in 0..Relation::ALL.len() {
                let at = first + r * RELATION_CLASSES;
                // Without "none" rows, only the tokens of objects that have an object in relation r.
                let kept: Vec<(u32, usize)> = shaped
                    .iter()
                    .copied()
                    .filter(|&(_, k)| self.config.relations_none || related[k][r].0 != BACKGROUND)
                    .collect();
                let rows: Vec<u32> = kept.iter().map(|s| s.0).collect();
                let colour: Vec<u32> = kept.iter().map(|&(_, k)| related[k][r].0).collect();
                let shape: Vec<u32> = kept.iter().map(|&(_, k)| related[k][r].1).collect();
                each.push(ce(&rows, at, 1, COLOUR_CLASSES, &colour)?);
                each.push(ce(&rows, at + COLOUR_CLASSES, 1, Shape::ALL.len() + 1, &shape)?);
            }
            parts[RELATION] = add_parts(each)?;
            first += Relation::ALL.len() * RELATION_CLASSES;
        }
        if self.config.counts {
            let counts: Vec<[u32; 3]> = (0..scene.objects.len()).map(|k| count_classes(scene, k)).collect();
            // The image's object count, the same at every token (and for every object).
            let in_image = count_classes(scene, 0)[0];
            parts[COUNT] = add_parts(vec![
                ce(&all, first, 1, COUNT_CLASSES, &vec![in_image; all.len()])?,
                ce(&rows, first + COUNT_CLASSES, 1, COUNT_CLASSES, &of_object(&|k| counts[k][1]))?,
                ce(&rows, first + 2 * COUNT_CLASSES, 1, COUNT_CLASSES, &of_object(&|k| counts[k][2]))?,
            ])?;
            first += 3 * COUNT_CLASSES;
        }
        if self.config.inventory {
            let (counts, pairs) = inventory_classes(scene);
            let every = |classes: &[u32]| classes.repeat(all.len());
            let pairs_first = first + INVENTORY_COUNTS * COUNT_CLASSES;
            parts[INVENTORY] = add_parts(vec![
                ce(&all, first, INVENTORY_COUNTS, COUNT_CLASSES, &every(&counts))?,
                ce(&all, pairs_first, INVENTORY_PAIRS, 2, &every(&pairs))?,
            ])?;
            first += INVENTORY_COLUMNS;
        }
        if let Some(head) = &self.boxes {
            let tenths: Vec<[u32; 4]> = (0..scene.objects.len()).map(|k| box_tenths(scene, k)).collect();
            let targets: Vec<u32> = shaped.iter().flat_map(|&(_, k)| tenths[k]).collect();
            parts[BOXES] = summed_ce(&head.forward(&tokens)?, &rows, 0, 4, BOX_BINS, &targets)?;
        }
        if self.config.order {
            let order: Vec<(u32, (u32, u32))> = (0..scene.objects.len()).map(|k| order_classes(scene, k)).collect();
            parts[ORDER] = add_parts(vec![
                ce(&rows, first, 1, COUNT_CLASSES, &of_object(&|k| order[k].0))?,
                ce(&rows, first + COUNT_CLASSES, 1, COLOUR_CLASSES, &of_object(&|k| order[k].1 .0))?,
                ce(
                    &rows,
                    first + COUNT_CLASSES + COLOUR_CLASSES,
                    1,
                    Shape::ALL.len() + 1,
                    &of_object(&|k| order[k].1 .1),
                )?,
            ])?;
        }
        Ok(parts)
    }

    /// Colour cross-entropy over every token of every time step, and motion over the tokens
    /// an object covers in one of the step's two frames (a step padded with a repeated last
    /// frame shows no motion and is not labelled with it).
    fn video_parts(&self, model: &Qwen2Vl, frames: &[Scene], direction: Direction) -> Result<Vec<Option<Part>>> {
        let images: Vec<_> = frames.iter().map(Scene::render).collect();
        let (tokens, [steps, h, w]) = model.video_tokens(&images)?;
        let logits = self.linear.forward(&tokens)?;
        let (mut colours, mut rows, mut motion) = (vec![], vec![], vec![]);
        for t in 0..steps {
            let (a, b) = (2 * t, (2 * t + 1).min(frames.len() - 1));
            let (step_colours, moves) = motion_labels(&frames[a], &frames[b], [h, w], direction);
            colours.extend(step_colours);
            if a != b {
                rows.extend(moves.iter().map(|&(token, _)| (t * h * w) as u32 + token));
                motion.extend(moves.iter().map(|&(_, class)| class));
            }
        }
        let all: Vec<u32> = (0..colours.len() as u32).collect();
        let mut parts: Vec<Option<Part>> = (0..PARTS).map(|_| None).collect();
        parts[COLOUR] = summed_ce(&logits, &all, 0, 1, COLOUR_CLASSES, &colours)?;
        parts[MOTION] = summed_ce(&logits, &rows, self.motion_first, 1, MOTION_CLASSES, &motion)?;
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_items_are_deterministic_per_step_and_clips_leave_the_scenes_alone() {
        let config = SceneConfig::default();
        assert_eq!(items(1, 5, &config, 3, 1), items(1, 5, &config, 3, 1));
        assert_ne!(items(1, 5, &config, 3, 0), items(1, 6, &config, 3, 0));
        let with_clips = items(1, 5, &config, 3, 2);
        assert_eq!(with_clips[2..], items(1, 5, &config, 3, 0)[..]);
        assert!(matches!(&with_clips[0], DenseItem::Video(frames, _) if frames.len() >= config.min_frames));
    }
}
