//! Decoding image files into 8-bit RGB, guarded against decompression bombs. The pixels match
//! transformers' `image_utils.load_image` (Pillow: `Image.open`, `ImageOps.exif_transpose`,
//! `.convert("RGB")`), including Pillow's quirks for alpha and 16-bit data.

use std::io::Cursor;
use std::path::Path;

use ::image::error::{ImageFormatHint, UnsupportedErrorKind};
use ::image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use super::gif_canvas::fill_outside_first_frame;
use super::ImageError;

/// Caps on what a decoder may be asked to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted `width * height`; checked from the header before any pixel is decoded.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    /// 64 megapixels: larger than any camera photo a user is likely to send, small enough that
    /// the worst case (16-bit RGBA) stays around half a gigabyte.
    fn default() -> Self {
        ImageLimits { max_pixels: 64_000_000 }
    }
}

/// Reads and decodes the image file at `path`; errors name the path.
pub fn load_image(path: &Path, limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ImageError::NotFound { path: name.clone() },
        _ => ImageError::Read { path: name.clone(), source },
    })?;
    decode_image(&bytes, &name, limits)
}

/// Decodes an in-memory PNG, JPEG, WebP, GIF (first frame) or BMP file into RGB. `name` (a
/// path, URL or "upload") appears in every error message.
///
/// The format comes from the content, not the name. The size is read from the header and
/// checked against `limits` before decoding; the decoder itself also gets allocation limits so
/// that data disagreeing with its header cannot make it allocate more. EXIF orientation is
/// applied, as transformers' `load_image` does.
pub fn decode_image(bytes: &[u8], name: &str, limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty { name: name.into() });
    }
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
        let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| corrupt(name, e))?;
        if reader.format().is_none() {
            return Err(ImageError::UnknownFormat { name: name.into() });
        }
        Ok(reader)
    };

    // Pass 1: the header only. No limits here, because some decoders reserve the whole image
    // buffer against `max_alloc` up front, which would hide the clearer message below.
    let mut header = reader()?;
    header.no_limits();
    let (width, height) = header.into_decoder().map_err(|e| from_image_error(name, e))?.dimensions();
    let pixels = check_size(name, width, height, limits)?;

    // Pass 2: decode, held to the header's size and to a budget of 8 bytes a pixel (16-bit
    // RGBA) plus room for the decoder's own working buffers.
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(width);
    decoder_limits.max_image_height = Some(height);
    decoder_limits.max_alloc = Some(pixels * 8 + (64 << 20));
    let mut reader = reader()?;
    let format = reader.format();
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|e| from_image_error(name, e))?;
    // A broken EXIF block should not make an otherwise good picture unreadable.
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| from_image_error(name, e))?;
    if let Some(orientation) = orientation {
        img.apply_orientation(orientation);
    }
    let mut rgb = to_rgb_like_pillow(img);
    if format == Some(ImageFormat::Gif) {
        fill_outside_first_frame(bytes, &mut rgb);
    }
    Ok(rgb)
}

/// The width and height of the image file at `path`, read from its header alone (the rest of
/// the file is not read), checked as [`decode_image`] checks them: a cheap way to vet many
/// files before a long job decodes them.
pub fn probe_image(path: &Path, limits: &ImageLimits) -> Result<(u32, u32), ImageError> {
    let name = path.display().to_string();
    let reader = ImageReader::open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ImageError::NotFound { path: name.clone() },
            _ => ImageError::Read { path: name.clone(), source },
        })?
        .with_guessed_format()
        .map_err(|e| corrupt(&name, e))?;
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Err(ImageError::Empty { name });
    }
    if reader.format().is_none() {
        return Err(ImageError::UnknownFormat { name });
    }
    let (width, height) = reader.into_dimensions().map_err(|e| from_image_error(&name, e))?;
    check_size(&name, width, height, limits)?;
    Ok((width, height))
}

/// Refuses an empty or over-large image by its header's size; returns its pixel count.
fn check_size(name: &str, width: u32, height: u32, limits: &ImageLimits) -> Result<u64, ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize { name: name.into(), width, height });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ImageError::TooManyPixels { name: name.into(), width, height, pixels, limit: limits.max_pixels });
    }
    Ok(pixels)
}

/// Converts to RGB8 the way Pillow's `.convert("RGB")` does for the modes Pillow opens these
/// files in. Alpha is dropped, not composited (transformers' `load_image` converts before the
/// processor sees the image). 16-bit colour and grey+alpha PNGs keep the high byte of each
/// sample (Pillow unpacks them to 8 bits that way), but 16-bit greyscale opens as mode "I;16",
/// whose conversion clips values above 255 to 255 instead of scaling.
fn to_rgb_like_pillow(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let high = |v: u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(p) => map_pixels(w, h, &p, 4, |s| [s[0], s[1], s[2]]),
        DynamicImage::ImageLuma8(p) => map_pixels(w, h, &p, 1, |s| [s[0]; 3]),
        DynamicImage::ImageLumaA8(p) => map_pixels(w, h, &p, 2, |s| [s[0]; 3]),
        DynamicImage::ImageLuma16(p) => map_pixels(w, h, &p, 1, |s| [s[0].min(255) as u8; 3]),
        DynamicImage::ImageLumaA16(p) => map_pixels(w, h, &p, 2, |s| [high(s[0]); 3]),
        DynamicImage::ImageRgb16(p) => map_pixels(w, h, &p, 3, |s| [high(s[0]), high(s[1]), high(s[2])]),
        DynamicImage::ImageRgba16(p) => map_pixels(w, h, &p, 4, |s| [high(s[0]), high(s[1]), high(s[2])]),
        // Float images do not come out of the supported formats.
        other => other.to_rgb8(),
    }
}

/// Builds an RGB image from interleaved samples, `channels` per pixel.
fn map_pixels<T: Copy>(w: u32, h: u32, samples: &[T], channels: usize, f: impl Fn(&[T]) -> [u8; 3]) -> RgbImage {
    let raw = samples.chunks_exact(channels).flat_map(f).collect();
    RgbImage::from_raw(w, h, raw).expect("decoder returned a buffer of the wrong size")
}

fn corrupt(name: &str, detail: impl std::fmt::Display) -> ImageError {
    ImageError::Corrupt { name: name.into(), detail: detail.to_string() }
}

fn from_image_error(name: &str, err: ::image::ImageError) -> ImageError {
    match err {
        ::image::ImageError::Unsupported(e) => match e.kind() {
            UnsupportedErrorKind::Format(hint) => ImageError::UnsupportedFormat {
                name: name.into(),
                format: match hint {
                    ImageFormatHint::Exact(format) => format!("{format:?}").to_uppercase(),
                    other => other.to_string(),
                },
            },
            _ => ImageError::UnsupportedFeature { name: name.into(), detail: e.to_string() },
        },
        ::image::ImageError::Limits(e) => ImageError::Corrupt {
            name: name.into(),
            detail: format!("decoding needed more memory than its header promised: {e}"),
        },
        other => corrupt(name, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(bytes: &[u8], want: &[&str]) {
        let err = decode_image(bytes, "pics/cat.png", &ImageLimits::default()).unwrap_err().to_string();
        assert!(err.starts_with("pics/cat.png: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
        for w in want {
            assert!(err.contains(w), "{err:?} lacks {w:?}");
        }
    }

    /// A PNG chunk: length, type, data, CRC-32 of type and data.
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut crc = 0xffff_ffffu32;
        for &b in kind.iter().chain(data) {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&(!crc).to_be_bytes());
        out
    }

    /// An 8-bit RGB PNG header declaring `w` x `h`, followed by a token IDAT and IEND.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &ihdr));
        // zlib stream of a single stored empty block: enough for the header to parse.
        png.extend(chunk(b"IDAT", &[0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 1]));
        png.extend(chunk(b"IEND", &[]));
        png
    }

    #[test]
    fn empty_file() {
        check_err(b"", &["file is empty (0 bytes)"]);
    }

    #[test]
    fn text_file_is_unknown_format() {
        check_err(b"hello, this is not a picture\n", &["not a recognised image format"]);
    }

    #[test]
    fn unsupported_format_is_named() {
        // A little-endian TIFF signature: recognised by content, but not built in.
        check_err(b"II*\0\x08\0\0\0\0\0\0\0\0\0\0\0", &["TIFF images are not supported"]);
    }

    #[test]
    fn corrupt_bytes() {
        let mut bad = b"\x89PNG\r\n\x1a\n".to_vec();
        bad.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8]);
        check_err(&bad, &["corrupt or truncated image data"]);
    }

    #[test]
    fn truncated_png() {
        let img = RgbImage::from_fn(16, 16, |x, y| [x as u8 * 13, y as u8 * 7, 99].into());
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), ::image::ImageFormat::Png).unwrap();
        assert_eq!(decode_image(&png, "ok.png", &ImageLimits::default()).unwrap(), img);
        check_err(&png[..png.len() / 2], &["corrupt or truncated image data"]);
    }

    #[test]
    fn over_limit_header_is_rejected_before_decoding() {
        check_err(
            &png_header(20000, 20000),
            &["image is 20000x20000 = 400000000 pixels, over the limit of 64000000 (raise it with --max-image-pixels"],
        );
        // A BMP header alone: 30000 x 30000, 24 bits, no pixel data.
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&(54u32).to_le_bytes()); // file size (a lie)
        bmp.extend_from_slice(&[0; 4]);
        bmp.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
        bmp.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER
        bmp.extend_from_slice(&30000i32.to_le_bytes());
        bmp.extend_from_slice(&30000i32.to_le_bytes());
        bmp.extend_from_slice(&1u16.to_le_bytes());
        bmp.extend_from_slice(&24u16.to_le_bytes());
        bmp.extend_from_slice(&[0; 24]);
        check_err(&bmp, &["image is 30000x30000 = 900000000 pixels, over the limit"]);
        // The same header within a raised limit gets as far as the missing pixels.
        let big = ImageLimits { max_pixels: 1 << 40 };
        let err = decode_image(&png_header(20000, 20000), "x.png", &big).unwrap_err();
        assert!(err.to_string().starts_with("x.png: corrupt or truncated"), "{err}");
    }

    #[test]
    fn zero_size() {
        // GIF89a, logical screen 0x7, no colour table, then an image descriptor and trailer.
        let gif = b"GIF89a\x00\x00\x07\x00\x00\x00\x00,\x00\x00\x00\x00\x00\x00\x07\x00\x00\x02\x02\x44\x01\x00;";
        check_err(gif, &["image has zero size (0x7)"]);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load_image(Path::new("/nonexistent/dir/cat.jpg"), &ImageLimits::default()).unwrap_err().to_string();
        assert_eq!(err, "/nonexistent/dir/cat.jpg: no such file");
    }

    /// Each format and pixel layout against transformers' `load_image` (Pillow). Lossless files
    /// must match exactly; lossy ones are decoded by different JPEG/WebP decoders than Pillow's.
    #[test]
    fn matches_pillow_load_image() {
        use super::super::test_fixtures as fx;
        let index = fx::index();
        let blob = fx::read("decode.bin");
        let mut failures = Vec::new();
        for entry in index["decode"].as_array().unwrap() {
            let file = entry["file"].as_str().unwrap();
            let img = decode_image(&fx::read(file), file, &ImageLimits::default()).unwrap();
            let want = fx::range(&blob, entry);
            let dims = (fx::u32_field(entry, "width"), fx::u32_field(entry, "height"));
            if img.dimensions() != dims {
                failures.push(format!("{file}: {:?}, want {dims:?}", img.dimensions()));
                continue;
            }
            let diffs: Vec<i32> = img.as_raw().iter().zip(want).map(|(&a, &b)| a as i32 - b as i32).collect();
            let max = diffs.iter().map(|d| d.abs()).max().unwrap();
            let mean = diffs.iter().map(|d| d.abs() as f64).sum::<f64>() / diffs.len() as f64;
            eprintln!("{file}: max {max} mean {mean:.3}");
            let exact = entry["exact"].as_bool().unwrap();
            if (exact && max != 0) || (!exact && (max > 8 || mean > 1.0)) {
                failures.push(format!("{file}: max difference {max}, mean {mean:.3}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
