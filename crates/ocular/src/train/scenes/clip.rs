//! Video: one object sliding across a fixed background, and the question of which way.

use ::image::RgbImage;

use super::layout::{self, Object, Scene, EDGE};
use super::phrasing as say;
use super::render::{draw_object, random_background, render_background, unit_bbox};
use super::tasks::Built;
use super::vocab::{Colour, Direction, Shape};
use super::{SceneConfig, Task};
use crate::rng::Rng;

/// A video question about a fresh [`moving_clip`].
pub(super) fn video(rng: &mut Rng, config: &SceneConfig) -> Built {
    let (scenes, dir) = moving_clip(rng, config);
    let question = say::direction(rng, &scenes[0].objects[0].name());
    Built::new(Task::Video, scenes, question, dir.name().to_string())
}

/// The frames of one object sliding in a straight line at constant speed across a fixed
/// background, and its direction. Up to three static distractors keep clear of its whole path;
/// the mover is each frame's first object, and its colour is unique, so it is named
/// unambiguously and can be tracked by colour.
pub fn moving_clip(rng: &mut Rng, config: &SceneConfig) -> (Vec<Scene>, Direction) {
    let (w, h) = layout::canvas(rng, config);
    let background = random_background(rng, config.texture_prob);
    let short = w.min(h) as f32;
    let frames = rng.int(config.min_frames, config.max_frames);
    let dir = *rng.pick(&Direction::ALL);
    let (shape, colour) = (*rng.pick(&Shape::ALL), *rng.pick(&Colour::ALL));
    let mover = layout::new_object(rng, shape, colour, short);
    let [a, b, c, d] = unit_bbox(shape).map(|v| v * mover.radius);
    let (x_lo, x_hi, y_lo, y_hi) = (EDGE - a, w as f32 - EDGE - c, EDGE - b, h as f32 - EDGE - d);
    let [sx, sy] = dir.step();
    let horizontal = sx != 0.0;
    // Travel 30-60% of the canvas along the axis (less only if the object cannot fit that).
    let (lo, hi, extent) = if horizontal { (x_lo, x_hi, w) } else { (y_lo, y_hi, h) };
    let travel = (extent as f32 * rng.float(0.3, 0.6)).min(hi - lo);
    let forward = sx + sy > 0.0;
    let start_along = if forward { rng.float(lo, hi - travel) } else { rng.float(lo + travel, hi) };
    let across = if horizontal { rng.float(y_lo, y_hi) } else { rng.float(x_lo, x_hi) };
    let start = if horizontal { [start_along, across] } else { [across, start_along] };
    let at = |k: usize| {
        let t = travel * k as f32 / (frames - 1) as f32;
        Object { centre: [start[0] + sx * t, start[1] + sy * t], ..mover.clone() }
    };
    let (b0, b1) = (at(0).bbox(), at(frames - 1).bbox());
    let swept = [b0[0].min(b1[0]), b0[1].min(b1[1]), b0[2].max(b1[2]), b0[3].max(b1[3])];
    let n = rng.int(0, 3.min(config.max_objects.saturating_sub(1)));
    let distractors: Vec<Object> = layout::pick_attributes(rng, n, |_, c| c == colour)
        .into_iter()
        .map(|(s, c)| layout::new_object(rng, s, c, short))
        .collect();
    let distractors = layout::layout(rng, distractors, (w, h), &[swept]);
    let scenes = (0..frames)
        .map(|k| {
            let mut objects = vec![at(k)];
            objects.extend(distractors.iter().cloned());
            Scene { width: w, height: h, background: background.clone(), objects }
        })
        .collect();
    (scenes, dir)
}

/// Frames share one background, drawn once.
pub(super) fn render_frames(frames: &[Scene]) -> Vec<RgbImage> {
    let first = &frames[0];
    let bg = render_background(&first.background, first.width, first.height);
    frames
        .iter()
        .map(|f| {
            let mut img = bg.clone();
            f.objects.iter().for_each(|o| draw_object(&mut img, o));
            img
        })
        .collect()
}
