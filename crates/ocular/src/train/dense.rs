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
    /// Per token: the index in the scene of that object, if any covers enough of it.
    pub objects: Vec<Option<usize>>,
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
    let mut objects = Vec::with_capacity(rows * cols);
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
            objects.push(best.map(|(k, _)| k));
        }
    }
    let colours = objects.iter().map(|k| k.map_or(BACKGROUND, |k| colour_class(scene.objects[k].colour))).collect();
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
                size: size_class(o.size),
            }
        })
        .collect();
    TokenLabels { colours, objects, centres }
}

/// `(token, shape class, size class)` wherever shape is labelled: each object's centre token,
/// and with `covered` every other token an object covers.
fn shaped_tokens(scene: &Scene, labels: &TokenLabels, covered: bool) -> Vec<(u32, u32, u32)> {
    let mut shaped: Vec<(u32, u32, u32)> = labels.centres.iter().map(|c| (c.token as u32, c.shape, c.size)).collect();
    if covered {
        for (token, object) in labels.objects.iter().enumerate() {
            if let (Some(k), false) = (object, labels.centres.iter().any(|c| c.token == token)) {
                let o = &scene.objects[*k];
                shaped.push((token as u32, shape_class(o.shape), size_class(o.size)));
            }
        }
    }
    shaped
}

fn size_class(size: Size) -> u32 {
    Size::ALL.iter().position(|&z| z == size).expect("every size is listed") as u32
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
}

impl DenseParts {
    /// From the means of the parts [`DenseHead::parts`] gives, in its order.
    pub fn from_means(means: &[Option<f32>]) -> Self {
        let at = |k: usize| means.get(k).copied().flatten();
        Self { colour: at(0).unwrap_or(0.0), shape: at(1).unwrap_or(0.0), elsewhere: at(2), size: at(3) }
    }
}

/// The throwaway head: one linear map from a merged token to colour and shape logits (and,
/// with centre labels, a "no centre" shape class; with centre or covered labels, size logits).
pub struct DenseHead {
    linear: Linear,
    labels: DenseLabels,
}

impl DenseHead {
    /// Variables under `dense_head` in `vb` (kept out of the model's own weights).
    pub fn new(vb: VarBuilder, hidden: usize, labels: DenseLabels) -> Result<Self> {
        let extra = match labels {
            DenseLabels::Centre => 0,
            DenseLabels::Centres => 1 + Size::ALL.len(),
            DenseLabels::Covered => Size::ALL.len(),
        };
        let classes = COLOUR_CLASSES + Shape::ALL.len() + extra;
        Ok(Self { linear: candle_nn::linear(hidden, classes, vb.pp("dense_head"))?, labels })
    }

    /// How many parts [`Self::parts`] gives: colour, shape, "no centre" and size (the last two
    /// always `None` where the labels lack them).
    pub fn part_count(&self) -> usize {
        4
    }

    /// `scene` rendered and encoded as the model sees it, and its loss parts as sums (the step
    /// takes their means over a batch): colour cross-entropy over every token, shape over the
    /// centre tokens (with covered labels, also every covered token); with centre labels,
    /// "no centre" over the other tokens; size where shape is labelled. A part without tokens
    /// (or that the labels lack) is `None`.
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
        let shaped = shaped_tokens(scene, &labels, self.labels == DenseLabels::Covered);
        let rows: Vec<u32> = shaped.iter().map(|s| s.0).collect();
        let shapes: Vec<u32> = shaped.iter().map(|s| s.1).collect();
        let sizes: Vec<u32> = shaped.iter().map(|s| s.2).collect();
        let mut parts = vec![
            summed_ce(&all, 0, COLOUR_CLASSES, &labels.colours)?,
            summed_ce(&rows, COLOUR_CLASSES, shape_classes, &shapes)?,
            None,
            None,
        ];
        if centres {
            let others: Vec<u32> = all.iter().copied().filter(|r| !centre_rows.contains(r)).collect();
            parts[2] = summed_ce(&others, COLOUR_CLASSES, shape_classes, &vec![NO_CENTRE; others.len()])?;
        }
        if self.labels != DenseLabels::Centre {
            parts[3] = summed_ce(&rows, COLOUR_CLASSES + shape_classes, Size::ALL.len(), &sizes)?;
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
        assert_eq!(labels.objects, vec![Some(0), None, None, None, None, None, None, None]);
        let big = Scene { objects: vec![object(Shape::Circle, Colour::Blue, [70.0, 42.0], 13.0)], ..scene.clone() };
        assert_eq!(token_labels(&big, [2, 4]).colours[6], blue);

        // Covered labels add shape and size at the covered tokens that hold no centre.
        let wide = Scene {
            objects: vec![
                object(Shape::Triangle, Colour::Red, [56.0, 28.0], 27.0),
                object(Shape::Circle, Colour::Blue, [100.0, 10.0], 4.0),
            ],
            ..scene
        };
        let labels = token_labels(&wide, [2, 4]);
        let (triangle, large) = (shape_class(Shape::Triangle), size_class(Size::Large));
        assert_eq!((labels.centres[0].token, labels.centres[1].token, labels.objects[3]), (6, 3, None));
        let shaped = |covered| {
            let mut s = shaped_tokens(&wide, &labels, covered);
            s.sort();
            s
        };
        let circle = shape_class(Shape::Circle);
        assert_eq!(shaped(false), vec![(3, circle, large), (6, triangle, large)]);
        let covered_tokens: Vec<u32> =
            labels.objects.iter().enumerate().filter(|(_, o)| o.is_some()).map(|(t, _)| t as u32).collect();
        assert!(covered_tokens.len() > 1, "{:?}", labels.objects);
        let expected: Vec<(u32, u32, u32)> = covered_tokens
            .iter()
            .filter(|&&t| t != 6)
            .map(|&t| (t, triangle, large))
            .chain([(3, circle, large), (6, triangle, large)])
            .collect();
        let mut expected = expected;
        expected.sort();
        assert_eq!(shaped(true), expected);
    }

    #[test]
    fn dense_scenes_are_deterministic_per_step() {
        let config = SceneConfig::default();
        assert_eq!(scenes(1, 5, &config, 3), scenes(1, 5, &config, 3));
        assert_ne!(scenes(1, 5, &config, 3), scenes(1, 6, &config, 3));
    }
}
