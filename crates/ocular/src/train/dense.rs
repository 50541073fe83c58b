//! Dense supervision of the vision tower. Answers alone give a small vision tower trained from
//! scratch almost no signal about shape: the language model must first learn to look, and it
//! cannot learn to look at features that do not yet tell a square from a circle. So a
//! throwaway linear head reads every merged vision token (exactly what the language model
//! receives) and learns, from the scene's layout, the colour of the object under the token
//! (or background) and, at the token holding each object's centre, the object's shape. The
//! head is trained with the model and dropped from the saved folder.

use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

use super::scenes::{scene, Colour, Rng, Scene, SceneConfig, Shape};
use crate::error::Result;
use crate::models::qwen2_vl::Qwen2Vl;

/// The colour class of a token that no object covers.
const BACKGROUND: u32 = Colour::ALL.len() as u32;
const COLOUR_CLASSES: usize = Colour::ALL.len() + 1;
/// Points sampled per side of a token's cell to measure what covers it.
const PROBES: usize = 4;
/// An object names a token's colour when it covers at least this many of its probe points.
const MIN_COVER: usize = PROBES * PROBES / 4;

/// What one image's merged tokens should say.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLabels {
    /// Per token, row-major: the colour class of the object covering most of it.
    pub colours: Vec<u32>,
    /// (token, shape class) for the token that holds each object's centre.
    pub shapes: Vec<(usize, u32)>,
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
    let shapes = scene
        .objects
        .iter()
        .map(|o| {
            let r = ((o.centre[1] / cell_h) as usize).min(rows - 1);
            let c = ((o.centre[0] / cell_w) as usize).min(cols - 1);
            (r * cols + c, shape_class(o.shape))
        })
        .collect();
    TokenLabels { colours, shapes }
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

/// One dense step's loss: the sum to train on, and its two parts to report.
pub struct DenseLoss {
    pub total: Tensor,
    pub colour: f32,
    /// Zero when no scene held an object.
    pub shape: f32,
}

/// The throwaway head: one linear map from a merged token to colour and shape logits.
pub struct DenseHead {
    linear: Linear,
}

impl DenseHead {
    /// Variables under `dense_head` in `vb` (kept out of the model's own weights).
    pub fn new(vb: VarBuilder, hidden: usize) -> Result<Self> {
        let classes = COLOUR_CLASSES + Shape::ALL.len();
        Ok(Self { linear: candle_nn::linear(hidden, classes, vb.pp("dense_head"))? })
    }

    /// Mean colour cross-entropy over every token plus mean shape cross-entropy over the
    /// centre tokens, for `scenes` rendered and encoded as the model sees them.
    pub fn loss(&self, model: &Qwen2Vl, scenes: &[Scene]) -> Result<DenseLoss> {
        let images: Vec<_> = scenes.iter().map(Scene::render).collect();
        let (tokens, grids) = model.image_tokens(&images)?;
        let (mut colours, mut shape_rows, mut shapes) = (vec![], vec![], vec![]);
        for (scene, grid) in scenes.iter().zip(&grids) {
            let labels = token_labels(scene, *grid);
            for (token, shape) in labels.shapes {
                shape_rows.push((colours.len() + token) as u32);
                shapes.push(shape);
            }
            colours.extend(labels.colours);
        }
        let dev: &Device = tokens.device();
        let logits = self.linear.forward(&tokens)?;
        let colour_logits = logits.narrow(1, 0, COLOUR_CLASSES)?;
        let colour = candle_nn::loss::cross_entropy(&colour_logits, &Tensor::new(colours.as_slice(), dev)?)?;
        let colour_value = colour.to_scalar::<f32>()?;
        if shapes.is_empty() {
            return Ok(DenseLoss { total: colour, colour: colour_value, shape: 0.0 });
        }
        let rows = logits.index_select(&Tensor::new(shape_rows.as_slice(), dev)?, 0)?;
        let shape_logits = rows.narrow(1, COLOUR_CLASSES, Shape::ALL.len())?;
        let shape = candle_nn::loss::cross_entropy(&shape_logits, &Tensor::new(shapes.as_slice(), dev)?)?;
        let shape_value = shape.to_scalar::<f32>()?;
        Ok(DenseLoss { total: (colour + shape)?, colour: colour_value, shape: shape_value })
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
        assert_eq!(labels.shapes, vec![(0, shape_class(Shape::Square)), (6, shape_class(Shape::Circle))]);
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
