//! Rasterising scenes: flat-coloured shapes over plain or lightly textured backgrounds, in the
//! spirit of Sort-of-CLEVR (Santoro et al., 2017, "A simple neural network module for
//! relational reasoning"), which drew 2-D shapes instead of CLEVR's ray-traced 3-D ones.
//!
//! Outlines are literal vertex tables rather than computed with `sin`/`cos`, so pixels do not
//! depend on a platform's libm. Edges are anti-aliased with 4x4 supersampling, done only where
//! a pixel straddles the boundary; interior pixels get the object's colour exactly.

use ::image::{Rgb, RgbImage};

use super::layout::Object;
use super::vocab::Shape;
use crate::rng::{splitmix64, Rng};

/// Square, half-side 0.85: a little smaller than the circle's bounding box so areas look alike.
const SQUARE: [[f32; 2]; 4] = [[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]];
/// Equilateral triangle pointing up, circumradius 1.15, centroid at the origin.
const TRIANGLE: [[f32; 2]; 3] = [[0.0, -1.15], [0.995929, 0.575], [-0.995929, 0.575]];
/// Five-pointed star pointing up: outer radius 1.2, inner 0.5 (chunkier than a regular star,
/// so small stars still read as stars).
const STAR: [[f32; 2]; 10] = [
    [0.0, -1.2],
    [0.293893, -0.404508],
    [1.141268, -0.37082],
    [0.475528, 0.154508],
    [0.705342, 0.97082],
    [0.0, 0.5],
    [-0.705342, 0.97082],
    [-0.475528, 0.154508],
    [-1.141268, -0.37082],
    [-0.293893, -0.404508],
];
/// Rhombus taller than wide, so it is never a rotated square.
const DIAMOND: [[f32; 2]; 4] = [[0.0, -1.15], [0.8, 0.0], [0.0, 1.15], [-0.8, 0.0]];

/// Vertices of a polygonal shape in unit coordinates (y down), or `None` for the circle.
fn polygon(shape: Shape) -> Option<&'static [[f32; 2]]> {
    match shape {
        Shape::Circle => None,
        Shape::Square => Some(&SQUARE),
        Shape::Triangle => Some(&TRIANGLE),
        Shape::Star => Some(&STAR),
        Shape::Diamond => Some(&DIAMOND),
    }
}

/// Tight bounding box `[x1, y1, x2, y2]` of the shape at unit size, centred on the origin.
pub fn unit_bbox(shape: Shape) -> [f32; 4] {
    match polygon(shape) {
        None => [-1.0, -1.0, 1.0, 1.0],
        Some(pts) => pts.iter().fold([f32::MAX, f32::MAX, f32::MIN, f32::MIN], |b, p| {
            [b[0].min(p[0]), b[1].min(p[1]), b[2].max(p[0]), b[3].max(p[1])]
        }),
    }
}

/// Even-odd crossing test; works for the star, which is not convex.
fn inside_polygon(pts: &[[f32; 2]], x: f32, y: f32) -> bool {
    let mut inside = false;
    let mut j = pts.len() - 1;
    for i in 0..pts.len() {
        let ([xi, yi], [xj, yj]) = (pts[i], pts[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn segment_distance(p: [f32; 2], a: [f32; 2], b: [f32; 2]) -> f32 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let t = (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
    let (ex, ey) = (p[0] - a[0] - t * dx, p[1] - a[1] - t * dy);
    (ex * ex + ey * ey).sqrt()
}

/// Whether a point in unit coordinates lies inside the shape.
pub fn inside_unit(shape: Shape, x: f32, y: f32) -> bool {
    match polygon(shape) {
        None => x * x + y * y <= 1.0,
        Some(pts) => inside_polygon(pts, x, y),
    }
}

/// Unsigned distance (unit coordinates) from a point to the shape's outline.
fn boundary_distance_unit(shape: Shape, x: f32, y: f32) -> f32 {
    match polygon(shape) {
        None => ((x * x + y * y).sqrt() - 1.0).abs(),
        Some(pts) => {
            (0..pts.len()).map(|i| segment_distance([x, y], pts[i], pts[(i + 1) % pts.len()])).fold(f32::MAX, f32::min)
        }
    }
}

/// Whether a point (unit coordinates) lies within 0.75 px of the outline of a shape of
/// `radius` px: exactly `boundary_distance_unit(..) * radius < 0.75`, but a polygon's edges
/// whose bounding box lies clearly farther away (1% margin) are skipped: rasterising spent
/// most of its time measuring distances to far edges.
fn near_outline(shape: Shape, x: f32, y: f32, radius: f32) -> bool {
    let Some(pts) = polygon(shape) else {
        return boundary_distance_unit(shape, x, y) * radius < 0.75;
    };
    let reach = 0.75 / radius * 1.01;
    (0..pts.len()).any(|i| {
        let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
        let far = x < a[0].min(b[0]) - reach
            || x > a[0].max(b[0]) + reach
            || y < a[1].min(b[1]) - reach
            || y > a[1].max(b[1]) + reach;
        !far && segment_distance([x, y], a, b) * radius < 0.75
    })
}

/// Paints one object over whatever is already in `img`.
pub fn draw_object(img: &mut RgbImage, obj: &Object) {
    let [x1, y1, x2, y2] = obj.bbox();
    let (w, h) = (img.width() as i64, img.height() as i64);
    let px = |v: f32| v.floor() as i64;
    let unit = |x: f32, y: f32| ((x - obj.centre[0]) / obj.radius, (y - obj.centre[1]) / obj.radius);
    for py in px(y1).max(0)..=px(y2).min(h - 1) {
        for pxx in px(x1).max(0)..=px(x2).min(w - 1) {
            let (ux, uy) = unit(pxx as f32 + 0.5, py as f32 + 0.5);
            // Half a pixel diagonal is ~0.71 px: farther than that from the outline, the
            // whole pixel is on one side and one test decides it.
            let near_edge = near_outline(obj.shape, ux, uy, obj.radius);
            let covered: u32 = if !near_edge {
                if inside_unit(obj.shape, ux, uy) {
                    16
                } else {
                    0
                }
            } else {
                let mut n = 0;
                for sy in 0..4 {
                    for sx in 0..4 {
                        let (ux, uy) = unit(pxx as f32 + (sx as f32 + 0.5) / 4.0, py as f32 + (sy as f32 + 0.5) / 4.0);
                        n += inside_unit(obj.shape, ux, uy) as u32;
                    }
                }
                n
            };
            if covered > 0 {
                let bg = img.get_pixel(pxx as u32, py as u32).0;
                // Integer blend: full coverage gives the object's colour exactly.
                let mix = |b: u8, f: u8| ((b as u32 * (16 - covered) + f as u32 * covered + 8) / 16) as u8;
                let c = obj.rgb;
                img.put_pixel(pxx as u32, py as u32, Rgb([mix(bg[0], c[0]), mix(bg[1], c[1]), mix(bg[2], c[2])]));
            }
        }
    }
}

/// Stripe direction for [`Background::Stripes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeDir {
    Horizontal,
    Vertical,
    Diagonal,
}

/// A canvas fill. Textures stay within a couple of dozen grey levels of the base so saturated
/// objects always stand out; the base is a slightly tinted grey, light or dark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Background {
    Plain {
        base: [u8; 3],
    },
    /// Per-pixel luminance noise of up to `amplitude` levels, hashed from `(seed, x, y)` so
    /// video frames share it exactly.
    Noise {
        base: [u8; 3],
        amplitude: u8,
        seed: u64,
    },
    Stripes {
        base: [u8; 3],
        alt: [u8; 3],
        width: u32,
        dir: StripeDir,
    },
    Checker {
        base: [u8; 3],
        alt: [u8; 3],
        cell: u32,
    },
    Gradient {
        from: [u8; 3],
        to: [u8; 3],
        vertical: bool,
    },
}

/// Draws a background; `texture_prob` is the chance of anything but a plain fill.
pub fn random_background(rng: &mut Rng, texture_prob: f64) -> Background {
    let light = rng.chance(0.7);
    let grey = (if light { rng.int(175, 235) } else { rng.int(35, 75) }) as i32;
    let base = [0; 3].map(|_: u8| (grey + rng.int(0, 12) as i32 - 6) as u8);
    let delta = rng.int(10, 22) as i32;
    let alt = base.map(|c| (if light { c as i32 - delta } else { c as i32 + delta }) as u8);
    if !rng.chance(texture_prob) {
        return Background::Plain { base };
    }
    match rng.int(0, 3) {
        0 => Background::Noise { base, amplitude: rng.int(4, 10) as u8, seed: rng.next_u64() },
        1 => {
            let dir = *rng.pick(&[StripeDir::Horizontal, StripeDir::Vertical, StripeDir::Diagonal]);
            Background::Stripes { base, alt, width: rng.int(6, 24) as u32, dir }
        }
        2 => Background::Checker { base, alt, cell: rng.int(8, 32) as u32 },
        _ => Background::Gradient { from: base, to: alt, vertical: rng.chance(0.5) },
    }
}

/// The background alone, `width` x `height`.
pub fn render_background(bg: &Background, width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb(match *bg {
            Background::Plain { base } => base,
            Background::Noise { base, amplitude, seed } => {
                let mut s = seed ^ ((y as u64) << 32 | x as u64);
                let a = amplitude as i32;
                let offset = (splitmix64(&mut s) % (2 * a as u64 + 1)) as i32 - a;
                base.map(|c| (c as i32 + offset).clamp(0, 255) as u8)
            }
            Background::Stripes { base, alt, width, dir } => {
                let t = match dir {
                    StripeDir::Horizontal => y,
                    StripeDir::Vertical => x,
                    StripeDir::Diagonal => x + y,
                };
                if (t / width) % 2 == 0 {
                    base
                } else {
                    alt
                }
            }
            Background::Checker { base, alt, cell } => {
                if (x / cell + y / cell) % 2 == 0 {
                    base
                } else {
                    alt
                }
            }
            Background::Gradient { from, to, vertical } => {
                let (t, n) = if vertical { (y, height) } else { (x, width) };
                let n = n.max(2) - 1;
                // Integer interpolation, rounded: identical on every platform.
                let lerp = |a: u8, b: u8| ((a as u32 * (n - t) + b as u32 * t + n / 2) / n) as u8;
                [lerp(from[0], to[0]), lerp(from[1], to[1]), lerp(from[2], to[2])]
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::scenes::vocab::{Colour, Size};

    fn object(shape: Shape, centre: [f32; 2], radius: f32) -> Object {
        Object { shape, colour: Colour::Red, size: Size::Large, rgb: [200, 30, 40], centre, radius }
    }

    #[test]
    fn near_outline_decides_as_the_full_distance_does() {
        for shape in Shape::ALL {
            for radius in [8.0f32, 13.5, 25.7] {
                for i in -300..=300 {
                    for j in -300..=300 {
                        let (x, y) = (i as f32 / 200.0, j as f32 / 200.0);
                        let exact = boundary_distance_unit(shape, x, y) * radius < 0.75;
                        assert_eq!(near_outline(shape, x, y, radius), exact, "{shape:?} r {radius} at ({x}, {y})");
                    }
                }
            }
        }
    }

    #[test]
    fn unit_boxes_match_the_tables() {
        assert_eq!(unit_bbox(Shape::Circle), [-1.0, -1.0, 1.0, 1.0]);
        assert_eq!(unit_bbox(Shape::Triangle), [-0.995929, -1.15, 0.995929, 0.575]);
        assert_eq!(unit_bbox(Shape::Diamond), [-0.8, -1.15, 0.8, 1.15]);
        // The star's hollows are outside, its centre inside.
        assert!(inside_unit(Shape::Star, 0.0, 0.0));
        assert!(!inside_unit(Shape::Star, 0.0, 0.8));
        assert!(inside_unit(Shape::Star, 0.0, -1.1));
    }

    #[test]
    fn drawn_shapes_fill_their_interior_and_stay_in_their_box() {
        for shape in Shape::ALL {
            let bg = Background::Plain { base: [220, 220, 220] };
            let mut img = render_background(&bg, 80, 70);
            let obj = object(shape, [40.3, 36.7], 20.0);
            draw_object(&mut img, &obj);
            assert_eq!(img.get_pixel(40, 36).0, [200, 30, 40], "{shape:?} centre");
            let [x1, y1, x2, y2] = obj.bbox();
            let mut painted = 0;
            for (x, y, p) in img.enumerate_pixels() {
                if p.0 != [220, 220, 220] {
                    painted += 1;
                    assert!(x as f32 + 1.0 > x1 && (x as f32) < x2 && y as f32 + 1.0 > y1 && (y as f32) < y2);
                }
            }
            // The painted area is close to the geometric area (circle: pi * 400).
            if shape == Shape::Circle {
                assert!((1200..1320).contains(&painted), "circle painted {painted}");
            }
            assert!(painted > 500, "{shape:?} painted {painted}");
        }
    }

    #[test]
    fn backgrounds_are_deterministic_and_gentle() {
        let mut rng = Rng::seed_from_u64(11);
        for _ in 0..40 {
            let bg = random_background(&mut rng, 1.0);
            let a = render_background(&bg, 60, 40);
            assert_eq!(a, render_background(&bg, 60, 40));
            let lum = |p: &Rgb<u8>| p.0.iter().map(|&c| c as i32).sum::<i32>() / 3;
            let (lo, hi) = a.pixels().fold((255, 0), |(lo, hi), p| (lo.min(lum(p)), hi.max(lum(p))));
            assert!(hi - lo <= 30, "{bg:?} spans {lo}..{hi}");
            // Never saturated: channels of one pixel stay within a tint of each other.
            for p in a.pixels() {
                let (mn, mx) = (p.0.iter().min().unwrap(), p.0.iter().max().unwrap());
                assert!(mx - mn <= 12, "{bg:?}: {p:?}");
            }
        }
    }
}
