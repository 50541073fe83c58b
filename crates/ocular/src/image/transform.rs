//! Geometry and value transforms of the image processors: centre crop, pad to square, and
//! rescale + normalise into a channels-first float tensor. Follows transformers 5.24
//! `image_transforms.py` (`center_crop`, `rescale`, `normalize`) and
//! `models/llava/image_processing_pil_llava.py` (`pad_to_square`), PIL back-end.

use ::image::{Rgb, RgbImage};

/// Crops `width` x `height` from the middle of `img`, as transformers' numpy `center_crop`:
/// the offset on each axis is `(size - crop) // 2`. On an axis where the crop is larger than
/// the image, the image is first padded with zeros, `ceil((crop - size) / 2)` before it (so
/// odd padding puts the extra zero row or column *before* the image; the torchvision back-end
/// puts it after).
pub fn center_crop(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    // Returns (first source index, first destination index, count) along one axis.
    let axis = |size: u32, crop: u32| -> (u32, u32, u32) {
        if crop <= size {
            ((size - crop) / 2, 0, crop)
        } else {
            (0, (crop - size).div_ceil(2), size)
        }
    };
    let (sx, dx, nx) = axis(in_w, width);
    let (sy, dy, ny) = axis(in_h, height);
    let mut out = RgbImage::new(width, height);
    copy_rect(img, sx, sy, &mut out, dx, dy, nx, ny);
    out
}

/// Pastes `img` in the middle of a square canvas of side `max(width, height)` filled with
/// `background`, as LLaVA's `pad_to_square` (`do_pad`): the offset along the short axis is
/// `(long - short) // 2`. A square image is returned unchanged.
pub fn expand_to_square(img: &RgbImage, background: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let side = w.max(h);
    let mut out = RgbImage::from_pixel(side, side, Rgb(background));
    copy_rect(img, 0, 0, &mut out, (side - w) / 2, (side - h) / 2, w, h);
    out
}

/// Copies an `nx` x `ny` block from `src` at (`sx`, `sy`) into `dst` at (`dx`, `dy`).
#[allow(clippy::too_many_arguments)]
fn copy_rect(src: &RgbImage, sx: u32, sy: u32, dst: &mut RgbImage, dx: u32, dy: u32, nx: u32, ny: u32) {
    let (sw, dw) = (src.width() as usize, dst.width() as usize);
    let n = nx as usize * 3;
    let (src, dst) = (src.as_raw(), &mut **dst);
    for row in 0..ny as usize {
        let s = ((sy as usize + row) * sw + sx as usize) * 3;
        let d = ((dy as usize + row) * dw + dx as usize) * 3;
        dst[d..d + n].copy_from_slice(&src[s..s + n]);
    }
}

/// Turns `img` into a `(3, height, width)` tensor (channels first, row-major), applying
/// transformers' `rescale` then `normalize` with their exact precision: `rescale` multiplies in
/// float64 and rounds to float32 (hence `rescale_factor` is an `f64`), `normalize` subtracts and
/// divides in float32 with the mean and std rounded to float32. The result is bit-identical to
/// transformers' PIL back-end.
pub fn to_normalized_chw(
    img: &RgbImage,
    rescale_factor: f64,
    do_rescale: bool,
    do_normalize: bool,
    mean: [f32; 3],
    std: [f32; 3],
) -> Vec<f32> {
    to_chw_with(img, |c, p| {
        let mut v = if do_rescale { (p as f64 * rescale_factor) as f32 } else { p as f32 };
        if do_normalize {
            v = (v - mean[c]) / std[c];
        }
        v
    })
}

/// Turns `img` into a `(3, height, width)` tensor whose value for channel `c` and sample `p`
/// is `f(c, p)`: the layout shared by every back-end's rescale + normalise arithmetic.
pub(super) fn to_chw_with(img: &RgbImage, f: impl Fn(usize, u8) -> f32) -> Vec<f32> {
    let plane = img.width() as usize * img.height() as usize;
    let mut out = vec![0f32; 3 * plane];
    // (3, h*w) planes, filled from the interleaved (h*w, 3) pixels.
    for (c, dst) in out.chunks_exact_mut(plane.max(1)).enumerate().take(3) {
        for (d, px) in dst.iter_mut().zip(img.as_raw().chunks_exact(3)) {
            *d = f(c, px[c]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image whose pixel (x, y) is (x, y, 7), so positions can be read back.
    fn coords(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 7]))
    }

    #[test]
    fn crop_inside_uses_floor_offsets() {
        let out = center_crop(&coords(10, 9), 5, 4);
        assert_eq!(out.dimensions(), (5, 4));
        // x offset (10-5)//2 = 2, y offset (9-4)//2 = 2.
        assert_eq!(out.get_pixel(0, 0).0, [2, 2, 7]);
        assert_eq!(out.get_pixel(4, 3).0, [6, 5, 7]);
    }

    #[test]
    fn crop_larger_than_image_pads_zeros_before_with_ceil() {
        // Height 5 -> 8 pads ceil(3/2) = 2 rows above and 1 below; width 10 -> 6 crops from 2.
        let out = center_crop(&coords(10, 5), 6, 8);
        assert_eq!(out.dimensions(), (6, 8));
        for y in [0, 1, 7] {
            assert!((0..6).all(|x| out.get_pixel(x, y).0 == [0, 0, 0]), "row {y}");
        }
        assert_eq!(out.get_pixel(0, 2).0, [2, 0, 7]);
        assert_eq!(out.get_pixel(5, 6).0, [7, 4, 7]);
    }

    #[test]
    fn square_padding_centres_with_floor_offset() {
        let out = expand_to_square(&coords(3, 6), [122, 116, 104]);
        assert_eq!(out.dimensions(), (6, 6));
        // (6-3)//2 = 1 column of background on the left, 2 on the right.
        assert_eq!(out.get_pixel(0, 0).0, [122, 116, 104]);
        assert_eq!(out.get_pixel(1, 0).0, [0, 0, 7]);
        assert_eq!(out.get_pixel(3, 5).0, [2, 5, 7]);
        assert_eq!(out.get_pixel(4, 5).0, [122, 116, 104]);
        // (5-2)//2 = 1 row above, 2 below.
        let wide = expand_to_square(&coords(5, 2), [1, 2, 3]);
        assert_eq!(wide.get_pixel(0, 0).0, [1, 2, 3]);
        assert_eq!(wide.get_pixel(0, 1).0, [0, 0, 7]);
        assert_eq!(wide.get_pixel(4, 2).0, [4, 1, 7]);
        assert_eq!(wide.get_pixel(4, 3).0, [1, 2, 3]);
    }

    #[test]
    fn normalisation_is_channels_first_and_in_transformers_precision() {
        let img = RgbImage::from_raw(2, 1, vec![0, 128, 255, 1, 2, 3]).unwrap();
        let mean = [0.481_454_66, 0.457_827_5, 0.408_210_73];
        let std = [0.268_629_54, 0.261_302_6, 0.275_777_1];
        let t = to_normalized_chw(&img, 1.0 / 255.0, true, true, mean, std);
        // Layout: R plane, G plane, B plane.
        let want = |p: u8, c: usize| ((p as f64 * (1.0 / 255.0)) as f32 - mean[c]) / std[c];
        assert_eq!(t, vec![want(0, 0), want(1, 0), want(128, 1), want(2, 1), want(255, 2), want(3, 2)]);
        let raw = to_normalized_chw(&img, 1.0 / 255.0, false, false, mean, std);
        assert_eq!(raw, vec![0.0, 1.0, 128.0, 2.0, 255.0, 3.0]);
    }
}
