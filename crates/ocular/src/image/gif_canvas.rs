//! The part of a GIF's first frame that Pillow and the `image` crate disagree on: the canvas
//! outside the frame's rectangle. Pillow (`GifImagePlugin`) fills it with the frame's
//! transparency index, or index 0, and `.convert("RGB")` shows that palette colour; the `image`
//! crate leaves it transparent black. This reads just enough of the GIF (89a spec) to repaint it.

use ::image::RgbImage;

/// What Pillow needs to know about the first frame's canvas.
struct FirstFrame {
    /// Global colour table, RGB triples.
    palette: Vec<u8>,
    /// Transparent index from the graphic control extension before the first image.
    transparency: Option<u8>,
    /// (left, top, width, height) of the first image.
    rect: (u32, u32, u32, u32),
}

/// Repaints the pixels of `img` outside the first frame's rectangle as Pillow shows them.
/// Leaves `img` alone if the file cannot be read this far (the decoder has already accepted
/// it, so that only happens for files this reader does not understand).
pub(super) fn fill_outside_first_frame(bytes: &[u8], img: &mut RgbImage) {
    let Some(frame) = parse(bytes) else { return };
    let index = frame.transparency.unwrap_or(0) as usize;
    let fill = match frame.palette.get(index * 3..index * 3 + 3) {
        Some(c) => [c[0], c[1], c[2]],
        // Without a global table Pillow's palette starts with black.
        None => [0, 0, 0],
    };
    let (left, top, w, h) = frame.rect;
    let inside = |x: u32, y: u32| x >= left && x - left < w && y >= top && y - top < h;
    for (x, y, px) in img.enumerate_pixels_mut() {
        if !inside(x, y) {
            px.0 = fill;
        }
    }
}

fn parse(bytes: &[u8]) -> Option<FirstFrame> {
    let mut r = Reader { bytes, pos: 0 };
    if !matches!(r.take(6)?, b"GIF87a" | b"GIF89a") {
        return None;
    }
    r.take(4)?; // logical screen width and height
    let flags = r.byte()?;
    r.take(2)?; // background index (Pillow does not paint with it) and aspect ratio
    let palette = if flags & 0x80 != 0 { r.take(3 << ((flags & 7) + 1))?.to_vec() } else { Vec::new() };
    let mut transparency = None;
    loop {
        match r.byte()? {
            // Extension: a label, then data sub-blocks ending with an empty one.
            0x21 => {
                let label = r.byte()?;
                let first = r.sub_block()?;
                if label == 0xf9 && first.len() >= 4 {
                    // Graphic control: packed flags, delay (2 bytes), transparent index.
                    transparency = (first[0] & 1 != 0).then_some(first[3]);
                }
                if !first.is_empty() {
                    while !r.sub_block()?.is_empty() {}
                }
            }
            // Image descriptor: the first frame.
            0x2c => {
                let mut field = || r.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32);
                let rect = (field()?, field()?, field()?, field()?);
                return Some(FirstFrame { palette, transparency, rect });
            }
            _ => return None,
        }
    }
}

/// Reads GIF bytes in order; `None` when the data ends too soon.
pub(super) struct Reader<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(out)
    }

    pub fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// One data sub-block (a length byte, then that many bytes), without its length.
    pub fn sub_block(&mut self) -> Option<&'a [u8]> {
        let n = self.byte()? as usize;
        self.take(n)
    }

    /// Skips data sub-blocks up to and including the empty one; false if the data ends first.
    pub fn skip_sub_blocks(&mut self) -> bool {
        loop {
            match self.sub_block() {
                Some([]) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_image, ImageLimits};

    /// A 4x3 GIF whose only frame is 2x1 at (1, 1), optionally with a transparent index.
    fn small_frame_gif(transparency: Option<u8>) -> Vec<u8> {
        let mut gif = b"GIF89a\x04\x00\x03\x00\x81\x03\x00".to_vec();
        gif.extend_from_slice(&[10, 20, 30, 200, 100, 50, 0, 255, 0, 255, 255, 255]);
        if let Some(t) = transparency {
            gif.extend_from_slice(&[0x21, 0xf9, 4, 1, 0, 0, t, 0]);
        }
        gif.extend_from_slice(b",\x01\x00\x01\x00\x02\x00\x01\x00\x00");
        // LZW, minimum code size 2: clear, 1, 2, end in 3-bit codes.
        gif.extend_from_slice(&[2, 2, 0x8c, 0x0a, 0, b';']);
        gif
    }

    #[test]
    fn outside_is_index_zero_or_the_transparent_index() {
        // Pillow's output for these files: palette[0] (or palette[1] when index 1 is
        // transparent) around the frame's two pixels.
        for (t, fill) in [(None, [10, 20, 30]), (Some(1), [200, 100, 50])] {
            let img = decode_image(&small_frame_gif(t), "f.gif", &ImageLimits::default()).unwrap();
            assert_eq!(img.dimensions(), (4, 3));
            for (x, y, px) in img.enumerate_pixels() {
                let want = match (x, y) {
                    (1, 1) => [200, 100, 50],
                    (2, 1) => [0, 255, 0],
                    _ => fill,
                };
                assert_eq!(px.0, want, "({x}, {y}) with transparency {t:?}");
            }
        }
    }
}
