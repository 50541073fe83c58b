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

use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

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

/// One dense step's loss: the sum to train on, and its parts.
pub struct DenseLoss {
    pub total: Tensor,
    pub parts: DenseParts,
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

    /// Mean colour cross-entropy over every token plus mean shape cross-entropy over the
    /// centre tokens (with centre labels, plus "no centre" over the other tokens and size over
    /// the centre tokens), for `scenes` rendered and encoded as the model sees them.
    pub fn loss(&self, model: &Qwen2Vl, scenes: &[Scene]) -> Result<DenseLoss> {
        let images: Vec<_> = scenes.iter().map(Scene::render).collect();
        let (tokens, grids) = model.image_tokens(&images)?;
        let (mut colours, mut centres) = (vec![], vec![]);
        for (scene, grid) in scenes.iter().zip(&grids) {
            let mut labels = token_labels(scene, *grid);
            for centre in &mut labels.centres {
                if self.centres {
                    labels.colours[centre.token] = centre.colour;
                }
                centre.token += colours.len();
            }
            colours.extend(labels.colours);
            centres.extend(labels.centres);
        }
        let dev: &Device = tokens.device();
        let logits = self.linear.forward(&tokens)?;
        let shape_classes = Shape::ALL.len() + usize::from(self.centres);
        let ce = |rows: &[u32], first: usize, classes: usize, targets: &[u32]| -> Result<Tensor> {
            let picked = logits.index_select(&Tensor::new(rows, dev)?, 0)?.narrow(1, first, classes)?;
            Ok(candle_nn::loss::cross_entropy(&picked, &Tensor::new(targets, dev)?)?)
        };
        let all: Vec<u32> = (0..colours.len() as u32).collect();
        let colour = ce(&all, 0, COLOUR_CLASSES, &colours)?;
        let mut parts = DenseParts { colour: colour.to_scalar::<f32>()?, shape: 0.0, elsewhere: None, size: None };
        let mut total = colour;
        let centre_rows: Vec<u32> = centres.iter().map(|c| c.token as u32).collect();
        if !centres.is_empty() {
            let shapes: Vec<u32> = centres.iter().map(|c| c.shape).collect();
            let shape = ce(&centre_rows, COLOUR_CLASSES, shape_classes, &shapes)?;
            parts.shape = shape.to_scalar::<f32>()?;
            total = (total + shape)?;
        }
        if self.centres {
            let others: Vec<u32> = all.iter().copied().filter(|r| !centre_rows.contains(r)).collect();
            if !others.is_empty() {
                let elsewhere = ce(&others, COLOUR_CLASSES, shape_classes, &vec![NO_CENTRE; others.len()])?;
                parts.elsewhere = Some(elsewhere.to_scalar::<f32>()?);
                total = (total + elsewhere)?;
            }
            if !centres.is_empty() {
                let sizes: Vec<u32> = centres.iter().map(|c| c.size).collect();
                let size = ce(&centre_rows, COLOUR_CLASSES + shape_classes, Size::ALL.len(), &sizes)?;
                parts.size = Some(size.to_scalar::<f32>()?);
                total = (total + size)?;
            }
        }
        Ok(DenseLoss { total, parts })
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
