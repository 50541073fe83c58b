//! Every frame of an animated GIF, composited as Pillow shows them (`ImageSequence.Iterator`
//! then `.convert("RGB")`): GIF89a blocks and LZW decoded here, then Pillow 13's
//! `GifImagePlugin` rules (`_seek`, `load_prepare`, `load_end`) replayed on an RGB canvas.
//! Browsers and the `image` crate composite differently (transparent black backgrounds,
//! per-frame disposal), hence a reader of our own.

use ::image::RgbImage;

use super::gif_canvas::Reader;
use super::gif_lzw::lzw_decode;
use super::{ImageError, ImageLimits};

/// A parsed GIF: the screen and where each frame's data lies. Nothing is decoded yet.
pub(super) struct GifAnimation<'a> {
    pub width: u32,
    pub height: u32,
    /// Global colour table, unless it is the identity grey ramp, which Pillow drops.
    global: Option<&'a [u8]>,
    /// The screen's background index when there is a global table (else 0, as Pillow).
    background: u8,
    frames: Vec<Frame<'a>>,
}

struct Frame<'a> {
    left: u32,
    top: u32,
    width: u32,
    height: u32,
    interlace: bool,
    local: Option<&'a [u8]>,
    transparency: Option<u8>,
    /// Disposal bits of this frame's graphic control extension; 0 leaves the previous method
    /// in force (a Pillow quirk: "unspecified" never resets it).
    disposal: u8,
    /// Delay in 1/100 s from the graphic control extension, if there was one.
    delay: Option<u16>,
    min_code_size: u8,
    /// The LZW data sub-blocks, without their length bytes.
    blocks: Vec<&'a [u8]>,
}

/// What the previous frame's disposal puts back before the next frame is drawn.
enum Dispose {
    Fill([u8; 3]),
    Saved(Vec<u8>),
}

pub(super) fn parse_gif<'a>(bytes: &'a [u8], name: &str) -> Result<GifAnimation<'a>, ImageError> {
    let corrupt = |detail: &str| ImageError::Corrupt { name: name.into(), detail: detail.into() };
    let mut r = Reader { bytes, pos: 0 };
    let truncated = || corrupt("GIF data ends early");
    let screen = r.take(13).ok_or_else(|| corrupt("GIF header is cut short"))?;
    if !matches!(&screen[..6], b"GIF87a" | b"GIF89a") {
        return Err(corrupt("not a GIF file"));
    }
    let (width, height) = (u16le(&screen[6..]) as u32, u16le(&screen[8..]) as u32);
    let (mut global, mut background) = (None, 0);
    if screen[10] & 0x80 != 0 {
        background = screen[11];
        let table = r.take(3 << ((screen[10] & 7) + 1)).ok_or_else(truncated)?;
        global = Some(table).filter(|p| palette_needed(p));
    }
    let mut frames = Vec::new();
    let (mut transparency, mut disposal, mut delay) = (None, 0, None);
    // Like Pillow, stop at the trailer or at the end of the data, and skip stray bytes.
    while let Some(byte) = r.byte() {
        match byte {
            b';' => break,
            b'!' => {
                let Some((label, first)) = r.byte().zip(r.sub_block()) else {
                    break;
                };
                if label == 0xf9 && first.len() >= 4 {
                    if first[0] & 1 != 0 {
                        transparency = Some(first[3]);
                    }
                    let bits = (first[0] >> 2) & 7;
                    disposal = if bits != 0 { bits } else { disposal };
                    delay = Some(u16le(&first[1..]));
                }
                if !first.is_empty() && !r.skip_sub_blocks() {
                    break;
                }
            }
            b',' => {
                let d = r.take(9).ok_or_else(truncated)?;
                let local = match d[8] & 0x80 {
                    0 => None,
                    _ => Some(r.take(3 << ((d[8] & 7) + 1)).ok_or_else(truncated)?),
                };
                let min_code_size = r.byte().ok_or_else(truncated)?;
                let mut blocks = Vec::new();
                loop {
                    match r.sub_block().ok_or_else(truncated)? {
                        [] => break,
                        block => blocks.push(block),
                    }
                }
                frames.push(Frame {
                    left: u16le(d) as u32,
                    top: u16le(&d[2..]) as u32,
                    width: u16le(&d[4..]) as u32,
                    height: u16le(&d[6..]) as u32,
                    interlace: d[8] & 0x40 != 0,
                    local,
                    transparency: transparency.take(),
                    disposal: std::mem::take(&mut disposal),
                    delay: delay.take(),
                    min_code_size,
                    blocks,
                });
            }
            _ => {}
        }
    }
    Ok(GifAnimation { width, height, global, background, frames })
}

impl<'a> GifAnimation<'a> {
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// Each frame's delay in 1/100 s (`None` without a graphic control extension).
    pub fn delays(&self) -> impl Iterator<Item = Option<u16>> + '_ {
        self.frames.iter().map(|f| f.delay)
    }

    /// The frames at `keep` (ascending indices), composited as Pillow does. Every earlier frame
    /// is decoded too, because each frame draws over the ones before it.
    pub fn render(&self, keep: &[usize], name: &str, limits: &ImageLimits) -> Result<Vec<RgbImage>, ImageError> {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut canvas = vec![0u8; w * h * 3];
        let mut out = Vec::with_capacity(keep.len());
        // Pillow opens a GIF whose first frame has no palette in mode "L" and never leaves it:
        // every index is then a grey level.
        let grey = self.frames.first().is_some_and(|f| self.palette(f).is_none());
        let mut disposal = 0;
        let mut pending: Option<(Rect, Dispose)> = None;
        let last = keep.last().map_or(0, |&k| k + 1);
        for (k, f) in self.frames.iter().enumerate().take(last) {
            disposal = if f.disposal != 0 { f.disposal } else { disposal };
            if let Some((rect, dispose)) = pending.take() {
                rect.paste(&mut canvas, w, &dispose);
            }
            let pal = if grey { None } else { self.palette(f) };
            // The canvas part of the frame; Pillow would grow the canvas instead.
            let rect = Rect {
                x0: f.left.min(self.width) as usize,
                y0: f.top.min(self.height) as usize,
                x1: (f.left + f.width).min(self.width) as usize,
                y1: (f.top + f.height).min(self.height) as usize,
            };
            // Frame 0 is still a palette image when its disposal is prepared, so its fill goes
            // through the palette lookup; later frames use `_rgb`, which maps indices past the
            // table to entry 0.
            let fill = |idx: u8| match k {
                0 => pixel_colour(idx, pal),
                _ => dispose_colour(idx, pal),
            };
            pending = match disposal {
                0 | 1 => None,
                2 => {
                    // Frame 0's transparency stays in `info` only in mode "L".
                    let t = match (grey, k) {
                        (true, 1..) => self.frames[0].transparency.or(f.transparency),
                        _ => f.transparency,
                    };
                    Some(Dispose::Fill(fill(t.unwrap_or(self.background))))
                }
                // 3 and the reserved 4-7 restore the previous picture. Before frame 0 there is
                // none: Pillow fills with the transparent index, or does nothing.
                _ if k == 0 => f.transparency.map(|t| Dispose::Fill(fill(t))),
                _ => Some(Dispose::Saved(rect.crop(&canvas, w))),
            }
            .map(|d| (rect, d));

            let indices = self.decode(f, k, name, limits)?;
            if k == 0 {
                // Outside its rectangle, frame 0 shows its transparent index, else index 0.
                let c = pixel_colour(f.transparency.unwrap_or(0), pal);
                canvas.chunks_exact_mut(3).for_each(|px| px.copy_from_slice(&c));
            }
            let skip = if k == 0 { None } else { f.transparency };
            for y in rect.y0..rect.y1 {
                let row = &indices[(y - f.top as usize) * f.width as usize..];
                for x in rect.x0..rect.x1 {
                    let idx = row[x - f.left as usize];
                    if Some(idx) != skip {
                        let at = (y * w + x) * 3;
                        canvas[at..at + 3].copy_from_slice(&pixel_colour(idx, pal));
                    }
                }
            }
            if keep.binary_search(&k).is_ok() {
                out.push(RgbImage::from_raw(self.width, self.height, canvas.clone()).unwrap());
            }
        }
        Ok(out)
    }

    /// Pillow's frame palette: the local table, except that an identity grey table means
    /// "no palette"; without a local table, the global one.
    fn palette(&self, f: &Frame<'a>) -> Option<&'a [u8]> {
        match f.local {
            Some(p) => Some(p).filter(|p| palette_needed(p)),
            None => self.global,
        }
    }

    /// The frame's indices, `(height, width)` in display row order.
    fn decode(&self, f: &Frame<'_>, k: usize, name: &str, limits: &ImageLimits) -> Result<Vec<u8>, ImageError> {
        let (fw, fh) = (f.width as usize, f.height as usize);
        let pixels = (fw * fh) as u64;
        if pixels > limits.max_pixels {
            return Err(ImageError::TooManyPixels {
                name: format!("{name} frame {k}"),
                width: f.width,
                height: f.height,
                pixels,
                limit: limits.max_pixels,
            });
        }
        let mut linear = vec![0u8; fw * fh];
        let written = lzw_decode(f.min_code_size, &f.blocks, &mut linear)
            .map_err(|detail| ImageError::Corrupt { name: name.into(), detail: format!("frame {k}: {detail}") })?;
        if written < linear.len() {
            return Err(ImageError::Corrupt {
                name: name.into(),
                detail: format!("frame {k}: image data ends after {written} of {} pixels", linear.len()),
            });
        }
        if !f.interlace {
            return Ok(linear);
        }
        // Interlaced rows arrive as every 8th from 0, every 8th from 4, every 4th from 2,
        // then every 2nd from 1.
        let order = [(0, 8), (4, 8), (2, 4), (1, 2)].into_iter().flat_map(|(start, step)| (start..fh).step_by(step));
        let mut out = vec![0u8; fw * fh];
        for (src, dst) in order.enumerate() {
            out[dst * fw..(dst + 1) * fw].copy_from_slice(&linear[src * fw..(src + 1) * fw]);
        }
        Ok(out)
    }
}

/// The part of the canvas a frame covers.
#[derive(Clone, Copy)]
struct Rect {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl Rect {
    fn crop(self, canvas: &[u8], w: usize) -> Vec<u8> {
        (self.y0..self.y1).flat_map(|y| &canvas[(y * w + self.x0) * 3..(y * w + self.x1) * 3]).copied().collect()
    }

    fn paste(self, canvas: &mut [u8], w: usize, what: &Dispose) {
        let row_len = (self.x1 - self.x0) * 3;
        for (i, y) in (self.y0..self.y1).enumerate() {
            let row = &mut canvas[(y * w + self.x0) * 3..(y * w + self.x1) * 3];
            match what {
                Dispose::Fill(c) => row.chunks_exact_mut(3).for_each(|px| px.copy_from_slice(c)),
                Dispose::Saved(saved) => row.copy_from_slice(&saved[i * row_len..(i + 1) * row_len]),
            }
        }
    }
}

/// A pixel's colour after Pillow's palette conversion: indices past the table are black;
/// with no palette the index is a grey level.
fn pixel_colour(idx: u8, pal: Option<&[u8]>) -> [u8; 3] {
    let i = idx as usize * 3;
    match pal {
        Some(p) => p.get(i..i + 3).map_or([0; 3], |c| [c[0], c[1], c[2]]),
        None => [idx; 3],
    }
}

/// The disposal colour of Pillow's `_rgb`: indices past the table use entry 0.
fn dispose_colour(idx: u8, pal: Option<&[u8]>) -> [u8; 3] {
    match pal {
        Some(p) if idx as usize * 3 + 3 > p.len() => [p[0], p[1], p[2]],
        _ => pixel_colour(idx, pal),
    }
}

/// Pillow's `_is_palette_needed`: false for the identity grey ramp.
fn palette_needed(p: &[u8]) -> bool {
    p.chunks_exact(3).enumerate().any(|(i, c)| !(i < 256 && c.iter().all(|&v| v as usize == i)))
}

fn u16le(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

#[cfg(test)]
#[path = "gif_frames_tests.rs"]
mod tests;
