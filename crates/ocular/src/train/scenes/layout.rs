//! Scenes as data: objects with shape, colour, size and position, placed without overlap, and
//! the spatial relations between them. CLEVR (Johnson et al., 2017) asks left/right/front/behind
//! of rendered 3-D scenes; in 2-D we ask left/right/above/below plus Sort-of-CLEVR's
//! nearest/farthest, and only when a clear margin makes exactly one object the answer.

use ::image::RgbImage;

use super::render::{draw_object, inside_unit, random_background, render_background, unit_bbox, Background};
use super::vocab::{Colour, Shape, Size};
use super::SceneConfig;
use crate::rng::Rng;

/// One shape on the canvas. `radius` scales the unit outline (see `render`); `centre` is the
/// outline's origin: the centroid, which lies inside every shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    /// The colour actually painted: the named colour plus a small jitter.
    pub rgb: [u8; 3],
    pub centre: [f32; 2],
    pub radius: f32,
}

impl Object {
    /// Tight bounding box `[x1, y1, x2, y2]` in pixels.
    pub fn bbox(&self) -> [f32; 4] {
        let [a, b, c, d] = unit_bbox(self.shape);
        let [x, y] = self.centre;
        [x + a * self.radius, y + b * self.radius, x + c * self.radius, y + d * self.radius]
    }

    /// How questions and answers name the object: "red circle". Unique within a scene.
    pub fn name(&self) -> String {
        format!("{} {}", self.colour.name(), self.shape.name())
    }

    /// Whether the pixel-space point lies inside the outline.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        inside_unit(self.shape, (x - self.centre[0]) / self.radius, (y - self.centre[1]) / self.radius)
    }
}

/// A canvas, its background and its objects; everything needed to render it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub width: u32,
    pub height: u32,
    pub background: Background,
    pub objects: Vec<Object>,
}

impl Scene {
    pub fn render(&self) -> RgbImage {
        let mut img = render_background(&self.background, self.width, self.height);
        for obj in &self.objects {
            draw_object(&mut img, obj);
        }
        img
    }

    pub fn count_shape(&self, shape: Shape) -> usize {
        self.objects.iter().filter(|o| o.shape == shape).count()
    }

    pub fn count_colour(&self, colour: Colour) -> usize {
        self.objects.iter().filter(|o| o.colour == colour).count()
    }

    pub fn find(&self, colour: Colour, shape: Shape) -> Option<usize> {
        self.objects.iter().position(|o| o.colour == colour && o.shape == shape)
    }

    pub fn short_side(&self) -> f32 {
        self.width.min(self.height) as f32
    }

    /// The least separation (pixels) that counts as "clearly" left, nearer, etc.
    pub fn margin(&self) -> f32 {
        (0.06 * self.short_side()).max(6.0)
    }
}

/// A random scene drawn with `config`'s canvas sizes and object counts.
pub fn scene(rng: &mut Rng, config: &SceneConfig) -> Scene {
    scene_with(rng, config, config.min_objects, config.max_objects)
}

/// Canvas size: width and height independent, so aspect ratios run from 1:4 to 4:1.
pub(crate) fn canvas(rng: &mut Rng, config: &SceneConfig) -> (u32, u32) {
    let side = |rng: &mut Rng| rng.int(config.min_side as usize, config.max_side as usize) as u32;
    (side(rng), side(rng))
}

/// Radius in pixels. The bands (about 6% and 11% of the short side, floors 8 and 14 px) are far
/// enough apart that "small" and "large" never overlap, whatever the canvas.
pub(crate) fn radius_for(rng: &mut Rng, size: Size, short: f32) -> f32 {
    match size {
        Size::Small => (short * rng.float(0.055, 0.065)).max(8.0),
        Size::Large => (short * rng.float(0.10, 0.115)).max(14.0),
    }
}

/// Empty space kept between bounding boxes, so objects never touch.
pub(crate) fn gap(short: f32) -> f32 {
    (0.03 * short).max(4.0)
}

/// Space kept between an object and the canvas edge.
pub(crate) const EDGE: f32 = 2.0;

/// Whether two boxes are at least `gap` apart along some axis.
pub(crate) fn separated(a: [f32; 4], b: [f32; 4], gap: f32) -> bool {
    a[2] + gap <= b[0] || b[2] + gap <= a[0] || a[3] + gap <= b[1] || b[3] + gap <= a[1]
}

/// A centre for `shape` at `radius` inside the canvas and clear of `occupied`, or `None` after
/// a fixed number of tries.
pub(crate) fn place(
    rng: &mut Rng,
    shape: Shape,
    radius: f32,
    (w, h): (u32, u32),
    occupied: &[[f32; 4]],
) -> Option<[f32; 2]> {
    let [a, b, c, d] = unit_bbox(shape).map(|v| v * radius);
    let (x_lo, x_hi) = (EDGE - a, w as f32 - EDGE - c);
    let (y_lo, y_hi) = (EDGE - b, h as f32 - EDGE - d);
    if x_lo >= x_hi || y_lo >= y_hi {
        return None;
    }
    let g = gap(w.min(h) as f32);
    for _ in 0..100 {
        let (x, y) = (rng.float(x_lo, x_hi), rng.float(y_lo, y_hi));
        let bbox = [x + a, y + b, x + c, y + d];
        if occupied.iter().all(|&o| separated(bbox, o, g)) {
            return Some([x, y]);
        }
    }
    None
}

/// `n` distinct (shape, colour) pairs not rejected by `avoid`. The number of distinct shapes is
/// drawn first, so some scenes repeat a shape in several colours: counting questions then have
/// answers above one.
pub(crate) fn pick_attributes(rng: &mut Rng, n: usize, avoid: impl Fn(Shape, Colour) -> bool) -> Vec<(Shape, Colour)> {
    let mut shapes = Shape::ALL;
    rng.shuffle(&mut shapes);
    let kinds = rng.int(1, n.clamp(1, shapes.len()));
    let mut chosen: Vec<(Shape, Colour)> = Vec::with_capacity(n);
    for _ in 0..n {
        let free = |pool: &[Shape]| -> Vec<(Shape, Colour)> {
            let mut v = Vec::new();
            for &s in pool {
                for c in Colour::ALL {
                    if !avoid(s, c) && !chosen.contains(&(s, c)) {
                        v.push((s, c));
                    }
                }
            }
            v
        };
        let mut options = free(&shapes[..kinds]);
        if options.is_empty() {
            options = free(&shapes);
        }
        if options.is_empty() {
            break;
        }
        chosen.push(*rng.pick(&options));
    }
    chosen
}

/// A new object with no position yet; the colour gets a jitter of up to 8 levels per channel.
pub(crate) fn new_object(rng: &mut Rng, shape: Shape, colour: Colour, short: f32) -> Object {
    let size = *rng.pick(&Size::ALL);
    let radius = radius_for(rng, size, short);
    let rgb = colour.rgb().map(|c| (c as i32 + rng.int(0, 16) as i32 - 8).clamp(0, 255) as u8);
    Object { shape, colour, size, rgb, centre: [0.0, 0.0], radius }
}

/// Places `objects` (largest first, which packs best) around `occupied`; returns those placed.
/// Retries the whole layout a few times before settling for the best partial one, so a
/// crowded small canvas sometimes gets fewer objects than asked for.
pub(crate) fn layout(rng: &mut Rng, mut objects: Vec<Object>, size: (u32, u32), occupied: &[[f32; 4]]) -> Vec<Object> {
    objects.sort_by(|a, b| b.radius.total_cmp(&a.radius));
    let mut best: Vec<Object> = Vec::new();
    for _ in 0..20 {
        let mut boxes = occupied.to_vec();
        let mut placed = Vec::with_capacity(objects.len());
        for obj in &objects {
            if let Some(centre) = place(rng, obj.shape, obj.radius, size, &boxes) {
                let obj = Object { centre, ..obj.clone() };
                boxes.push(obj.bbox());
                placed.push(obj);
            }
        }
        if placed.len() > best.len() {
            best = placed;
        }
        if best.len() == objects.len() {
            break;
        }
    }
    best
}

/// A scene with between `lo` and `hi` objects (fewer only if they cannot be fitted).
pub(crate) fn scene_with(rng: &mut Rng, config: &SceneConfig, lo: usize, hi: usize) -> Scene {
    let (width, height) = canvas(rng, config);
    let background = random_background(rng, config.texture_prob);
    let short = width.min(height) as f32;
    let n = rng.int(lo, hi);
    let objects: Vec<Object> =
        pick_attributes(rng, n, |_, _| false).into_iter().map(|(s, c)| new_object(rng, s, c, short)).collect();
    let objects = layout(rng, objects, (width, height), &[]);
    Scene { width, height, background, objects }
}

/// A spatial relation from an anchor object to the answer object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    LeftOf,
    RightOf,
    Above,
    Below,
    Nearest,
    Farthest,
}

impl Relation {
    pub const ALL: [Relation; 6] =
        [Relation::LeftOf, Relation::RightOf, Relation::Above, Relation::Below, Relation::Nearest, Relation::Farthest];
}

fn distance(a: &Object, b: &Object) -> f32 {
    let (dx, dy) = (a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]);
    (dx * dx + dy * dy).sqrt()
}

/// The one object standing in `relation` to `objects[anchor]`, if the answer is clear:
/// - left/right/above/below: exactly one other object lies wholly beyond the anchor's box on
///   that side, and every other object's centre is beyond the anchor's by the margin on the
///   other side (a centre test alone passed pairs that looked level to a person);
/// - nearest/farthest: at least two candidates, and the winner beats the runner-up by the margin
///   and by a ratio (30% nearer, or 20% farther).
pub fn relation_answer(scene: &Scene, anchor: usize, relation: Relation) -> Option<usize> {
    let a = &scene.objects[anchor];
    let m = scene.margin();
    let others = (0..scene.objects.len()).filter(|&i| i != anchor);
    // How far object `o` lies on the asked side of the anchor (negative: the other side).
    let side = |o: &Object| match relation {
        Relation::LeftOf => a.centre[0] - o.centre[0],
        Relation::RightOf => o.centre[0] - a.centre[0],
        Relation::Above => a.centre[1] - o.centre[1],
        Relation::Below => o.centre[1] - a.centre[1],
        Relation::Nearest | Relation::Farthest => unreachable!(),
    };
    match relation {
        Relation::Nearest | Relation::Farthest => {
            let mut d: Vec<(f32, usize)> = others.map(|i| (distance(a, &scene.objects[i]), i)).collect();
            if d.len() < 2 {
                return None;
            }
            d.sort_by(|x, y| x.0.total_cmp(&y.0));
            let clear = if relation == Relation::Nearest {
                d[1].0 - d[0].0 >= m && d[1].0 >= 1.3 * d[0].0
            } else {
                let n = d.len();
                d[n - 1].0 - d[n - 2].0 >= m && d[n - 1].0 >= 1.2 * d[n - 2].0
            };
            let winner = if relation == Relation::Nearest { d[0].1 } else { d[d.len() - 1].1 };
            clear.then_some(winner)
        }
        _ => {
            let (ab, mut hit) = (a.bbox(), None);
            for i in others {
                let o = &scene.objects[i];
                let ob = o.bbox();
                let clear = match relation {
                    Relation::LeftOf => ob[2] <= ab[0],
                    Relation::RightOf => ob[0] >= ab[2],
                    Relation::Above => ob[3] <= ab[1],
                    _ => ob[1] >= ab[3],
                };
                if clear && side(o) > m && hit.is_none() {
                    hit = Some(i);
                } else if side(o) > -m {
                    return None;
                }
            }
            hit
        }
    }
}
