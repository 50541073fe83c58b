//! Drawing detections onto the image: an outline per box in its own colour and the label in a
//! filled tag above it, written with the built-in bitmap font so nothing beyond `image` is needed.

use ::image::{Rgb, RgbImage};

use super::{font, Detection};

/// Saturated colours that stay apart from each other and from most photographs; the n-th box
/// gets the n-th, cycling.
const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [0, 128, 128],
    [255, 225, 25],
];

/// The colour [`draw`] gives the box at `index`, for a legend drawn elsewhere (a web page).
pub fn colour(index: usize) -> [u8; 3] {
    PALETTE[index % PALETTE.len()]
}

/// A copy of `img` with each box outlined and labelled. Outlines are drawn inside the box so a
/// box on the image border stays visible; coordinates outside the image are clamped. The tag
/// sits above the box, or just inside its top when there is no room above, and is cut to the
/// image width. Line and text grow with the image so they stay legible.
pub fn draw(img: &RgbImage, boxes: &[Detection]) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = out.dimensions();
    if w == 0 || h == 0 {
        return out;
    }
    let longest = w.max(h);
    let scale = 1 + longest / 640; // font pixels per font dot
    let thickness = if longest < 400 { 2 } else { 3 };
    let rects: Vec<Rect> = boxes.iter().map(|d| Rect::on_image(d.bbox, w, h)).collect();
    // Outlines first, then tags, so no outline runs across a label.
    for (i, r) in rects.iter().enumerate() {
        let c = Rgb(colour(i));
        for y in r.top..r.bottom {
            let band = y < r.top + thickness || y + thickness >= r.bottom;
            for x in r.left..r.right {
                if band || x < r.left + thickness || x + thickness >= r.right {
                    out.put_pixel(x, y, c);
                }
            }
        }
    }
    for (i, (d, r)) in boxes.iter().zip(&rects).enumerate() {
        if let Some(label) = &d.label {
            tag(&mut out, label, r, colour(i), scale);
        }
    }
    out
}

/// A box in whole pixels: columns `left..right`, rows `top..bottom`, inside the image and at
/// least one pixel each way.
struct Rect {
    left: u32,
    top: u32,
    right: u32,
    bottom: u32,
}

impl Rect {
    fn on_image([x1, y1, x2, y2]: [f32; 4], w: u32, h: u32) -> Rect {
        // `max` before `min` turns NaN into 0; `as u32` saturates.
        let lo = |v: f32, n: u32| v.floor().max(0.0).min((n - 1) as f32) as u32;
        let hi = |v: f32, lo: u32, n: u32| (v.ceil().max(0.0).min(n as f32) as u32).max(lo + 1);
        let (left, top) = (lo(x1.min(x2), w), lo(y1.min(y2), h));
        Rect { left, top, right: hi(x1.max(x2), left, w), bottom: hi(y1.max(y2), top, h) }
    }
}

/// The label in a tag filled with the box colour, text in black or white for contrast.
fn tag(out: &mut RgbImage, label: &str, r: &Rect, fill: [u8; 3], scale: u32) {
    let (w, h) = out.dimensions();
    let pad = scale;
    let advance = (font::WIDTH + 1) * scale;
    let fits = ((w.saturating_sub(2 * pad) + scale) / advance).max(1) as usize;
    let chars: Vec<char> = label.chars().take(fits).collect();
    if chars.is_empty() {
        return;
    }
    let tag_w = chars.len() as u32 * advance - scale + 2 * pad;
    let tag_h = font::HEIGHT * scale + 2 * pad;
    let x0 = r.left.min(w.saturating_sub(tag_w));
    let y0 = if r.top >= tag_h { r.top - tag_h } else { r.top.min(h.saturating_sub(tag_h)) };
    let luma = 299 * u32::from(fill[0]) + 587 * u32::from(fill[1]) + 114 * u32::from(fill[2]);
    let ink = if luma > 150_000 { [0, 0, 0] } else { [255, 255, 255] };
    let mut put = |x: u32, y: u32, c: [u8; 3]| {
        if x < w && y < h {
            out.put_pixel(x, y, Rgb(c));
        }
    };
    for y in y0..y0 + tag_h {
        for x in x0..x0 + tag_w {
            put(x, y, fill);
        }
    }
    for (i, &c) in chars.iter().enumerate() {
        let gx = x0 + pad + i as u32 * advance;
        for (row, bits) in font::glyph(c).iter().enumerate() {
            for col in 0..font::WIDTH {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                let (px, py) = (gx + col * scale, y0 + pad + row as u32 * scale);
                for dy in 0..scale {
                    for dx in 0..scale {
                        put(px + dx, py + dy, ink);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREY: Rgb<u8> = Rgb([40, 40, 40]);

    fn canvas(w: u32, h: u32) -> RgbImage {
        RgbImage::from_pixel(w, h, GREY)
    }

    fn det(label: Option<&str>, bbox: [f32; 4]) -> Detection {
        Detection { label: label.map(str::to_string), bbox }
    }

    fn changed(img: &RgbImage, xs: std::ops::Range<u32>, ys: std::ops::Range<u32>) -> usize {
        ys.flat_map(|y| xs.clone().map(move |x| (x, y))).filter(|&(x, y)| *img.get_pixel(x, y) != GREY).count()
    }

    #[test]
    fn outline_on_the_edges_and_nothing_elsewhere() {
        let img = draw(&canvas(100, 80), &[det(None, [20.0, 30.0, 60.0, 70.0])]);
        let c = Rgb(colour(0));
        // Two pixels thick, inside the box: columns 20-21 and 58-59, rows 30-31 and 68-69.
        for (x, y) in
            [(20, 50), (21, 50), (59, 50), (58, 50), (40, 30), (40, 31), (40, 69), (40, 68), (20, 30), (59, 69)]
        {
            assert_eq!(*img.get_pixel(x, y), c, "({x}, {y})");
        }
        for (x, y) in [(22, 50), (57, 50), (40, 32), (40, 67), (19, 50), (60, 50), (40, 29), (40, 70), (90, 5)] {
            assert_eq!(*img.get_pixel(x, y), GREY, "({x}, {y})");
        }
        assert_eq!(changed(&img, 0..100, 0..80), 2 * 2 * (40 + 40) - 4 * 4, "exactly the outline changed");
    }

    #[test]
    fn label_tag_sits_above_the_box() {
        let img = draw(&canvas(100, 80), &[det(Some("car"), [20.0, 30.0, 60.0, 70.0])]);
        // scale 1: tag is 8 + 2 rows tall, 3 * 6 - 1 + 2 columns wide, right above row 30.
        assert_eq!(*img.get_pixel(20, 20), Rgb(colour(0)), "tag fill at its corner");
        assert_eq!(*img.get_pixel(38, 29), Rgb(colour(0)));
        let white =
            (20..39).flat_map(|x| (20..30).map(move |y| (x, y))).filter(|&(x, y)| img.get_pixel(x, y).0 == [255; 3]);
        assert!(white.count() > 10, "text drawn in white on red");
        assert_eq!(changed(&img, 0..100, 0..20), 0);
        assert_eq!(changed(&img, 39..100, 20..30), 0);
    }

    #[test]
    fn tag_moves_inside_when_the_box_touches_the_top() {
        let img = draw(&canvas(100, 80), &[det(Some("a"), [0.0, 0.0, 100.0, 80.0])]);
        assert_eq!(*img.get_pixel(0, 0), Rgb(colour(0)));
        assert_eq!(*img.get_pixel(99, 79), Rgb(colour(0)));
        let white =
            (0..7).flat_map(|x| (0..10).map(move |y| (x, y))).filter(|&(x, y)| img.get_pixel(x, y).0 == [255; 3]);
        assert!(white.count() > 5, "tag text inside the box, at its top");
    }

    #[test]
    fn boxes_get_distinct_colours() {
        let img = draw(&canvas(100, 80), &[det(None, [0.0, 0.0, 10.0, 10.0]), det(None, [50.0, 50.0, 60.0, 60.0])]);
        assert_eq!(*img.get_pixel(0, 5), Rgb(colour(0)));
        assert_eq!(*img.get_pixel(50, 55), Rgb(colour(1)));
        assert_ne!(colour(0), colour(1));
        assert_eq!(colour(3), colour(13));
    }

    #[test]
    fn odd_boxes_and_images_do_not_panic() {
        let boxes = [
            det(Some("a long label that is wider than the whole image"), [-50.0, -50.0, 500.0, 500.0]),
            det(Some("x"), [9.5, 9.5, 9.5, 9.5]),
            det(Some("y"), [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.0]),
            det(Some("z"), [20.0, 20.0, 10.0, 10.0]),
            det(Some(""), [12.0, 0.0, 12.0, 0.0]),
        ];
        for (w, h) in [(12, 12), (1, 1), (3, 200), (200, 3), (0, 0), (0, 5)] {
            let img = draw(&canvas(w, h), &boxes);
            assert_eq!(img.dimensions(), (w, h));
        }
    }

    #[test]
    fn text_scales_with_the_image() {
        let img = draw(&canvas(1920, 1080), &[det(Some("I"), [100.0, 200.0, 400.0, 500.0])]);
        // scale 4, three-pixel outline: the tag is 8 * 4 + 8 = 40 rows above the box, and the
        // stem of the `I` is a 4-pixel-wide column of white.
        assert_eq!(*img.get_pixel(100, 160), Rgb(colour(0)));
        assert_eq!(*img.get_pixel(100, 159), GREY);
        assert_eq!(*img.get_pixel(102, 202), Rgb(colour(0)));
        assert_eq!(*img.get_pixel(103, 203), GREY);
        let stem_x = 100 + 4 + 2 * 4; // pad, then column 2 of the glyph
        for x in stem_x..stem_x + 4 {
            assert_eq!(img.get_pixel(x, 160 + 4 + 3 * 4).0, [255; 3], "x {x}");
        }
    }

    #[test]
    fn non_ascii_draws_like_a_question_mark() {
        let a = draw(&canvas(60, 40), &[det(Some("é"), [10.0, 20.0, 50.0, 35.0])]);
        let b = draw(&canvas(60, 40), &[det(Some("?"), [10.0, 20.0, 50.0, 35.0])]);
        assert_eq!(a, b);
    }
}
