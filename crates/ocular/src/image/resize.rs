//! Resampling that is bit-exact with Pillow's `Image.resize((w, h), resample=...)` on RGB images.
//! Follows Pillow's `src/libImaging/Resample.c` (convolution filters: double-precision kernel,
//! 22-bit fixed-point weights, horizontal pass then vertical pass with a uint8 clip in between)
//! and `Geometry.c` `ImagingScaleAffine` (NEAREST, which Pillow runs as an affine scale).

use super::ImageError;
use ::image::RgbImage;

/// Pillow's resampling filters, with Pillow's integer codes (`PIL.Image.Resampling`), which is
/// what transformers writes as `resample` in image processor configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    Nearest,
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Filter {
    /// Maps a PIL code (0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING).
    pub fn from_pil_code(code: u32) -> Result<Filter, ImageError> {
        Ok(match code {
            0 => Filter::Nearest,
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            _ => return Err(ImageError::UnknownFilter { code: code.into() }),
        })
    }

    /// The PIL code of this filter.
    pub fn pil_code(self) -> u32 {
        match self {
            Filter::Nearest => 0,
            Filter::Lanczos => 1,
            Filter::Bilinear => 2,
            Filter::Bicubic => 3,
            Filter::Box => 4,
            Filter::Hamming => 5,
        }
    }

    /// Half-width of the kernel in source pixels at scale 1 (Pillow's `struct filter.support`).
    fn support(self) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    /// The kernel, in the same double-precision operation order as Pillow so that the weights
    /// (and therefore their fixed-point rounding) come out identical.
    fn kernel(self, x: f64) -> f64 {
        use std::f64::consts::PI;
        match self {
            Filter::Nearest | Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * PI;
                    // Pillow writes these constants as C floats (0.54f, 0.46f): the window uses
                    // their single-precision values, widened to double.
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            Filter::Bicubic => {
                // Keys' cubic convolution with a = -0.5.
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Fixed-point weights carry 32 - 8 - 2 fractional bits: 8 bits for the pixel value and 2 spare
/// bits because kernels with negative lobes can sum past 1 before clipping.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One axis' resampling plan: for each output index, the first source index and the weights.
struct AxisCoeffs {
    /// `(first source index, number of taps)` per output index.
    bounds: Vec<(usize, usize)>,
    /// Row-major `(out_size, ksize)` fixed-point weights; unused tail entries are zero.
    weights: Vec<i32>,
    ksize: usize,
}

impl AxisCoeffs {
    /// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the full box
    /// `[0, in_size)` (transformers never passes `box` or `reducing_gap`).
    fn new(in_size: usize, out_size: usize, filter: Filter) -> AxisCoeffs {
        // Pillow takes the box as C floats; `in_size as f32` is exact for any real image.
        let scale = (in_size as f32) as f64 / out_size as f64;
        // When upscaling the kernel keeps its natural width; when downscaling it stretches by
        // the scale factor so that every source pixel contributes (antialiasing).
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut taps = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's `(int)` truncates toward zero; the clamps then keep the window inside the image.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (xmax - xmin as i64).max(0) as usize;
            let mut total = 0.0;
            for (x, tap) in taps.iter_mut().enumerate().take(n) {
                let w = filter.kernel(((x + xmin) as f64 - center + 0.5) * ss);
                *tap = w;
                total += w;
            }
            let row = &mut weights[xx * ksize..xx * ksize + n];
            for (dst, &w) in row.iter_mut().zip(&taps[..n]) {
                let w = if total != 0.0 { w / total } else { w };
                // Round half away from zero, then truncate, as `normalize_coeffs_8bpc` does.
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                *dst = if w < 0.0 { (scaled - 0.5) as i32 } else { (scaled + 0.5) as i32 };
            }
            bounds.push((xmin, n));
        }
        AxisCoeffs { bounds, weights, ksize }
    }

    fn taps(&self, out: usize) -> (usize, &[i32]) {
        let (start, n) = self.bounds[out];
        (start, &self.weights[out * self.ksize..out * self.ksize + n])
    }
}

/// The rounding bias added before the shift, and the clip to 0..=255 (Pillow's `clip8`).
const HALF: i32 = 1 << (PRECISION_BITS - 1);

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `img` to `width` x `height` exactly as Pillow's `Image.resize((width, height),
/// resample=filter)` does for an RGB image. A zero width or height yields an empty image
/// (Pillow raises instead).
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    if width == 0 || height == 0 {
        return RgbImage::new(width, height);
    }
    if img.dimensions() == (width, height) {
        // Pillow returns a copy without resampling.
        return img.clone();
    }
    if filter == Filter::Nearest {
        return resize_nearest(img, width, height);
    }
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    let vert = AxisCoeffs::new(in_h, out_h, filter);
    let src = img.as_raw();

    // Pillow 13 runs the vertical pass first when it removes more than twice as many rows as
    // the horizontal pass removes columns (python-pillow/Pillow#9549: less work); the uint8
    // rounding between passes makes the order visible, so follow it. Ties go horizontal first.
    if vertical_first(in_w, in_h, out_w, out_h) {
        let tall = vertical_pass(src, in_w, 0, &vert, out_h);
        let coeffs = AxisCoeffs::new(in_w, out_w, filter);
        let out = horizontal_pass(&tall, in_w, 0..out_h, out_w, &coeffs);
        return RgbImage::from_raw(width, height, out).expect("resize produced a buffer of the wrong size");
    }

    // Only the source rows the vertical pass will read need the horizontal pass.
    let (first_row, last_row) = if in_h == 0 {
        (0, 0)
    } else {
        let (s0, _) = vert.bounds[0];
        let (s1, n1) = vert.bounds[out_h - 1];
        (s0, s1 + n1)
    };

    // (rows, out_w * 3) after the horizontal pass, or the source itself when the width is kept.
    let (horiz, row_offset): (Vec<u8>, usize) = if out_w != in_w {
        let coeffs = AxisCoeffs::new(in_w, out_w, filter);
        (horizontal_pass(src, in_w, first_row..last_row, out_w, &coeffs), first_row)
    } else {
        (src.to_vec(), 0)
    };
    let out = if out_h != in_h { vertical_pass(&horiz, out_w, row_offset, &vert, out_h) } else { horiz };
    RgbImage::from_raw(width, height, out).expect("resize produced a buffer of the wrong size")
}

/// Whether Pillow 13 resamples rows (the vertical pass) before columns: when the height
/// shrinks by more than twice the rows the width shrinks by columns (a growing width counts
/// as shrinking by a negative amount).
fn vertical_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    out_h < in_h && out_w != in_w && (in_h - out_h) as i64 > 2 * (in_w as i64 - out_w as i64)
}

/// Resamples each row in `rows` of `src` (width `in_w`, RGB) to `out_w` pixels.
fn horizontal_pass(
    src: &[u8],
    in_w: usize,
    rows: std::ops::Range<usize>,
    out_w: usize,
    coeffs: &AxisCoeffs,
) -> Vec<u8> {
    let mut out = vec![0u8; rows.len() * out_w * 3];
    for (y, dst_row) in rows.zip(out.chunks_exact_mut(out_w * 3)) {
        let src_row = &src[y * in_w * 3..(y + 1) * in_w * 3];
        for (xx, dst) in dst_row.chunks_exact_mut(3).enumerate() {
            let (start, k) = coeffs.taps(xx);
            let (mut r, mut g, mut b) = (HALF, HALF, HALF);
            for (px, &w) in src_row[start * 3..(start + k.len()) * 3].chunks_exact(3).zip(k) {
                // Wrapping arithmetic mirrors C's 32-bit int and cannot change exact sums.
                r = r.wrapping_add((px[0] as i32).wrapping_mul(w));
                g = g.wrapping_add((px[1] as i32).wrapping_mul(w));
                b = b.wrapping_add((px[2] as i32).wrapping_mul(w));
            }
            dst[0] = clip8(r);
            dst[1] = clip8(g);
            dst[2] = clip8(b);
        }
    }
    out
}

/// Resamples columns: output row `yy` mixes rows of `src` (width `w`, RGB), whose first row is
/// source row `row_offset`.
fn vertical_pass(src: &[u8], w: usize, row_offset: usize, coeffs: &AxisCoeffs, out_h: usize) -> Vec<u8> {
    let stride = w * 3;
    let mut out = vec![0u8; out_h * stride];
    // Accumulate whole rows at a time: integer sums do not depend on order, and this walks
    // memory linearly.
    let mut acc = vec![0i32; stride];
    for (yy, dst_row) in out.chunks_exact_mut(stride).enumerate() {
        let (start, k) = coeffs.taps(yy);
        acc.fill(HALF);
        for (i, &wt) in k.iter().enumerate() {
            let y = start + i - row_offset;
            let src_row = &src[y * stride..(y + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(src_row) {
                *a = a.wrapping_add((p as i32).wrapping_mul(wt));
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    out
}

/// Pillow resizes with NEAREST through `ImagingScaleAffine`: the source coordinate starts at
/// half a step and is advanced by repeated addition of the step, in doubles, then truncated.
/// Reproducing the accumulation (not `(x + 0.5) * step`) keeps ties identical.
fn resize_nearest(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let positions = |in_size: usize, out_size: usize| -> Vec<Option<usize>> {
        let step = (in_size as f32) as f64 / out_size as f64;
        let mut pos = step * 0.5;
        (0..out_size)
            .map(|_| {
                let p = if pos < 0.0 { None } else { Some(pos as usize) };
                pos += step;
                p.filter(|&i| i < in_size)
            })
            .collect()
    };
    let xs = positions(in_w, width as usize);
    let ys = positions(in_h, height as usize);
    let src = img.as_raw();
    let mut out = RgbImage::new(width, height);
    let stride = width as usize * 3;
    for (dst_row, y) in out.chunks_exact_mut(stride).zip(&ys) {
        // Pillow fills pixels whose source falls outside the image with zeros.
        let Some(y) = *y else { continue };
        let src_row = &src[y * in_w * 3..(y + 1) * in_w * 3];
        for (dst, x) in dst_row.chunks_exact_mut(3).zip(&xs) {
            if let Some(x) = *x {
                dst.copy_from_slice(&src_row[x * 3..x * 3 + 3]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(w: u32, h: u32) -> RgbImage {
        let mut state = 12345u32;
        RgbImage::from_fn(w, h, |_, _| {
            let mut next = || {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (state >> 16) as u8
            };
            ::image::Rgb([next(), next(), next()])
        })
    }

    #[test]
    fn pass_order_follows_pillow_13() {
        // Widening while shrinking vertically: Pillow resamples rows first (checked against
        // Pillow 13 on the Qwen2-VL two_images fixture, 50x90 -> 56x84).
        let img = noisy(50, 90);
        let direct = resize(&img, 56, 84, Filter::Bicubic);
        let vertical_then_horizontal = resize(&resize(&img, 50, 84, Filter::Bicubic), 56, 84, Filter::Bicubic);
        let horizontal_then_vertical = resize(&resize(&img, 56, 90, Filter::Bicubic), 56, 84, Filter::Bicubic);
        assert_eq!(direct, vertical_then_horizontal);
        assert_ne!(direct, horizontal_then_vertical);
        // Widening while growing taller resamples columns first.
        let direct = resize(&img, 40, 100, Filter::Bicubic);
        assert_eq!(direct, resize(&resize(&img, 40, 90, Filter::Bicubic), 40, 100, Filter::Bicubic));
    }

    /// Sizes on both sides of Pillow 13's rule, each pass order measured with Pillow 13.0.0
    /// (`resize((w, h))` against the two one-axis-at-a-time compositions; every filter agrees).
    #[test]
    fn pass_order_matches_pillow_13_at_the_boundary() {
        let cases = [
            ((300, 200, 250, 100), false), // 100 rows == 2 x 50 columns: a tie, columns first
            ((300, 200, 251, 100), true),
            ((300, 200, 250, 99), true),
            ((100, 300, 50, 200), false),
            ((100, 300, 50, 199), true),
            ((1000, 40, 998, 36), false),
            ((1000, 40, 998, 35), true),
            ((100, 100, 200, 99), true), // widening while shrinking
            ((100, 100, 200, 101), false),
            ((100, 100, 99, 98), false),
            ((100, 100, 99, 97), true),
            ((342, 390, 171, 81), false),
            ((199, 181, 196, 168), true), // examples/scene.png in the built-in model's processor
            ((72, 182, 35, 31), true),
        ];
        for ((w0, h0, w, h), vertical) in cases {
            assert_eq!(vertical_first(w0, h0, w, h), vertical, "{w0}x{h0} -> {w}x{h}");
            let img = noisy(w0 as u32, h0 as u32);
            let (w, h) = (w as u32, h as u32);
            let direct = resize(&img, w, h, Filter::Bicubic);
            let rows_first = resize(&resize(&img, w0 as u32, h, Filter::Bicubic), w, h, Filter::Bicubic);
            let columns_first = resize(&resize(&img, w, h0 as u32, Filter::Bicubic), w, h, Filter::Bicubic);
            assert_eq!(direct == rows_first, vertical, "{w0}x{h0} -> {w}x{h}");
            assert_eq!(direct == columns_first, !vertical, "{w0}x{h0} -> {w}x{h}");
        }
    }

    #[test]
    fn pil_codes_round_trip_and_reject_unknown() {
        for code in 0..6 {
            assert_eq!(Filter::from_pil_code(code).unwrap().pil_code(), code);
        }
        let err = Filter::from_pil_code(7).unwrap_err().to_string();
        assert!(err.contains("unknown PIL resampling filter code 7"), "{err}");
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        // Each row of fixed-point weights must sum to about 1 << 22 (rounding moves it by a few).
        for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos, Filter::Hamming] {
            let c = AxisCoeffs::new(300, 37, filter);
            for out in 0..37 {
                let s: i64 = c.taps(out).1.iter().map(|&w| w as i64).sum();
                assert!((s - (1 << 22)).abs() <= 8, "{filter:?} row {out}: {s}");
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, ::image::Rgb([17, 200, 255]));
        for filter in
            [Filter::Nearest, Filter::Lanczos, Filter::Bilinear, Filter::Bicubic, Filter::Box, Filter::Hamming]
        {
            for (w, h) in [(80, 50), (13, 7), (37, 40), (1, 1)] {
                let out = resize(&img, w, h, filter);
                assert_eq!(out.dimensions(), (w, h));
                assert!(out.pixels().all(|p| p.0 == [17, 200, 255]), "{filter:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn box_halving_averages_pairs() {
        // A 4x1 row halved with BOX: each output is the rounded mean of two inputs.
        let img = RgbImage::from_raw(4, 1, vec![0, 0, 0, 255, 255, 255, 10, 20, 30, 11, 21, 31]).unwrap();
        let out = resize(&img, 2, 1, Filter::Box);
        assert_eq!(out.as_raw(), &vec![128, 128, 128, 11, 21, 31]);
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let empty = RgbImage::new(0, 0);
        assert_eq!(resize(&empty, 3, 2, Filter::Bicubic).dimensions(), (3, 2));
        assert_eq!(resize(&empty, 3, 2, Filter::Nearest).dimensions(), (3, 2));
        let img = RgbImage::from_pixel(5, 4, ::image::Rgb([9, 9, 9]));
        assert_eq!(resize(&img, 0, 7, Filter::Lanczos).dimensions(), (0, 7));
    }

    /// Every filter at every size in the fixtures, compared byte for byte with Pillow.
    #[test]
    fn bit_exact_with_pillow() {
        use super::super::test_fixtures as fx;
        let index = fx::index();
        let blob = fx::read("resize.bin");
        let mut checked = 0;
        let mut failures = Vec::new();
        for entry in index["resize"].as_array().unwrap() {
            let name = entry["image"].as_str().unwrap();
            let img = fx::input_image(name);
            let filter = Filter::from_pil_code(fx::u32_field(entry, "filter")).unwrap();
            let (w, h) = (fx::u32_field(entry, "width"), fx::u32_field(entry, "height"));
            let want = fx::range(&blob, entry);
            let got = resize(&img, w, h, filter);
            assert_eq!(got.dimensions(), (w, h));
            let diffs = got.as_raw().iter().zip(want).filter(|(a, b)| a != b).count();
            if diffs > 0 {
                failures.push(format!("{name} -> {w}x{h} {filter:?}: {diffs} bytes differ"));
            }
            checked += 1;
        }
        assert!(checked >= 80, "only {checked} cases");
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
