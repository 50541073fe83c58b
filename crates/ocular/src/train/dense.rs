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

use candle_core::{Device, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};

use super::parallel::Part;

use super::scenes::{scene, Colour, Rng, Scene, SceneConfig, Shape, Size};
use crate::error::Result;
use crate::models::qwen2_vl::Qwen2Vl;

/// The colour class of a token that no object covers.
const BACKGROUND: u32 = Colour::ALL.len() as u32;
const COLOUR_CLASSES: usize = Colour::ALL.len() + 1;
/// With centre labels, the shape class of a token that holds no object's centre.
const NO_CENTRE: u32 = Shape::ALL.len() as u32;
/// Points sampled per side of a token's cell to measure what covers it.
const PROBES: usize = 4;
/// An object names a token's colour when it covers at least this many of its probe points.
const MIN_COVER: usize = PROBES * PROBES / 4;

/// What one image's merged tokens should say.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLabels {
    /// Per token, row-major: the colour class of the object covering most of it.
    pub colours: Vec<u32>,
    /// The token that holds each object's centre, and that object.
    pub centres: Vec<Centre>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Centre {
    pub token: usize,
    pub shape: u32,
    pub colour: u32,
    pub size: u32,
}

/// Labels for a `grid` (`[rows, cols]` of merged tokens) laid over `scene`'s whole canvas:
/// the processor resizes the canvas onto the grid, so each token covers an equal share of it.
pub fn token_labels(scene: &Scene, grid: [usize; 2]) -> TokenLabels {
    let [rows, cols] = grid;
    let (cell_w, cell_h) = (scene.width as f32 / cols as f32, scene.height as f32 / rows as f32);
    let mut colours = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let mut cover = vec![0usize; scene.objects.len()];
            for i in 0..PROBES * PROBES {
                let x = (c as f32 + ((i % PROBES) as f32 + 0.5) / PROBES as f32) * cell_w;
                let y = (r as f32 + ((i / PROBES) as f32 + 0.5) / PROBES as f32) * cell_h;
                if let Some(k) = scene.objects.iter().position(|o| o.contains(x, y)) {
                    cover[k] += 1;
                }
            }
            let best = cover.iter().enumerate().max_by_key(|&(_, n)| *n).filter(|&(_, n)| *n >= MIN_COVER);
            colours.push(best.map_or(BACKGROUND, |(k, _)| colour_class(scene.objects[k].colour)));
        }
    }
    let centres = scene
        .objects
        .iter()
        .map(|o| {
            let r = ((o.centre[1] / cell_h) as usize).min(rows - 1);
            let c = ((o.centre[0] / cell_w) as usize).min(cols - 1);
            Centre {
                token: r * cols + c,
                shape: shape_class(o.shape),
                colour: colour_class(o.colour),
                size: Size::ALL.iter().position(|&z| z == o.size).expect("every size is listed") as u32,
            }
        })
        .collect();
    TokenLabels { colours, centres }
}

fn colour_class(colour: Colour) -> u32 {
    Colour::ALL.iter().position(|&c| c == colour).expect("every colour is listed") as u32
}

fn shape_class(shape: Shape) -> u32 {
    Shape::ALL.iter().position(|&s| s == shape).expect("every shape is listed") as u32
}

/// `n` scenes for dense step `step`, drawn from their own stream so any step can be redone.
pub fn scenes(seed: u64, step: u64, config: &SceneConfig, n: usize) -> Vec<Scene> {
    let mut rng = Rng::seed_from_u64(seed ^ 0xD3E5_E000_0000_0000 ^ step.wrapping_mul(0x2545_F491_4F6C_DD1D));
    (0..n).map(|_| scene(&mut rng, config)).collect()
}

/// One dense step's loss parts, as reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DenseParts {
    pub colour: f32,
    /// At centre tokens; zero when no scene held an object.
    pub shape: f32,
    /// With centre labels: "no centre" at every other token, and size at centre tokens.
    pub elsewhere: Option<f32>,
    pub size: Option<f32>,
}

impl DenseParts {
    /// From the means of the parts [`DenseHead::parts`] gives, in its order.
    pub fn from_means(means: &[Option<f32>]) -> Self {
        let at = |k: usize| means.get(k).copied().flatten();
        Self { colour: at(0).unwrap_or(0.0), shape: at(1).unwrap_or(0.0), elsewhere: at(2), size: at(3) }
    }
}

/// The throwaway head: one linear map from a merged token to colour and shape logits (and,
/// with centre labels, a "no centre" shape class and size logits).
pub struct DenseHead {
    linear: Linear,
    centres: bool,
}

impl DenseHead {
    /// Variables under `dense_head` in `vb` (kept out of the model's own weights).
    pub fn new(vb: VarBuilder, hidden: usize, centres: bool) -> Result<Self> {
        let classes = COLOUR_CLASSES + Shape::ALL.len() + if centres { 1 + Size::ALL.len() } else { 0 };
        Ok(Self { linear: candle_nn::linear(hidden, classes, vb.pp("dense_head"))?, centres })
    }

    /// How many parts [`Self::parts`] gives: colour and shape, and with centre labels
    /// "no centre" and size.
    pub fn part_count(&self) -> usize {
        if self.centres {
            4
        } else {
            2
        }
    }

    /// `scene` rendered and encoded as the model sees it, and its loss parts as sums (the step
    /// takes their means over a batch): colour cross-entropy over every token, shape over the
    /// centre tokens; with centre labels, "no centre" over the other tokens and size over the
    /// centre tokens. A part without tokens is `None`.
    pub fn parts(&self, model: &Qwen2Vl, scene: &Scene) -> Result<Vec<Option<Part>>> {
        let (tokens, grids) = model.image_tokens(&[scene.render()])?;
        let mut labels = token_labels(scene, grids[0]);
        if self.centres {
            for centre in &labels.centres {
                labels.colours[centre.token] = centre.colour;
            }
        }
        let dev: &Device = tokens.device();
        let logits = self.linear.forward(&tokens)?;
        let shape_classes = Shape::ALL.len() + usize::from(self.centres);
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
        let shapes: Vec<u32> = labels.centres.iter().map(|c| c.shape).collect();
        let mut parts = vec![
            summed_ce(&all, 0, COLOUR_CLASSES, &labels.colours)?,
            summed_ce(&centre_rows, COLOUR_CLASSES, shape_classes, &shapes)?,
        ];
        if self.centres {
            let others: Vec<u32> = all.iter().copied().filter(|r| !centre_rows.contains(r)).collect();
            parts.push(summed_ce(&others, COLOUR_CLASSES, shape_classes, &vec![NO_CENTRE; others.len()])?);
            let sizes: Vec<u32> = labels.centres.iter().map(|c| c.size).collect();
            parts.push(summed_ce(&centre_rows, COLOUR_CLASSES + shape_classes, Size::ALL.len(), &sizes)?);
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::scenes::{Background, Object, Size};

    fn object(shape: Shape, colour: Colour, centre: [f32; 2], radius: f32) -> Object {
        Object { shape, colour, size: Size::Large, rgb: colour.rgb(), centre, radius }
    }

    #[test]
    fn labels_follow_the_layout() {
        // A 112 x 56 canvas on a 4 x 2 grid: 28-pixel cells.
        let scene = Scene {
            width: 112,
            height: 56,
            background: Background::Plain { base: [128, 128, 128] },
            objects: vec![
                object(Shape::Square, Colour::Red, [14.0, 14.0], 12.0),
                object(Shape::Circle, Colour::Blue, [70.0, 42.0], 4.0),
            ],
        };
        let labels = token_labels(&scene, [2, 4]);
        let (red, blue) = (colour_class(Colour::Red), colour_class(Colour::Blue));
        // The square fills the first cell; the small circle covers under a quarter of its cell.
        assert_eq!(
            labels.colours,
            vec![red, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND]
        );
        let centres: Vec<(usize, u32, u32)> = labels.centres.iter().map(|c| (c.token, c.shape, c.colour)).collect();
        assert_eq!(centres, vec![(0, shape_class(Shape::Square), red), (6, shape_class(Shape::Circle), blue)]);
        let big = Scene { objects: vec![object(Shape::Circle, Colour::Blue, [70.0, 42.0], 13.0)], ..scene };
        assert_eq!(token_labels(&big, [2, 4]).colours[6], blue);
    }

    #[test]
    fn dense_scenes_are_deterministic_per_step() {
        let config = SceneConfig::default();
        assert_eq!(scenes(1, 5, &config, 3), scenes(1, 5, &config, 3));
        assert_ne!(scenes(1, 5, &config, 3), scenes(1, 6, &config, 3));
    }
}
