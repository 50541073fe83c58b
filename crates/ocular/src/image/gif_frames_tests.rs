//! Tests of `gif_frames` against Pillow's `ImageSequence` + `convert("RGB")` on the GIFs of
//! `scripts/fixtures/image_qwen2_vl.py`: Pillow-saved (real LZW, cropped frames) and hand-built
//! ones covering each disposal, transparency and palette rule.

use serde_json::Value;

use super::super::test_fixtures as fx;
use super::super::{decode_image, ImageLimits};
use super::*;

fn gif_entries() -> Vec<Value> {
    let index: Value = serde_json::from_slice(&fx::read("qwen2_vl/index.json")).unwrap();
    index["gif"].as_array().unwrap().clone()
}

#[test]
fn frames_match_pillow_image_sequence() {
    let blob = fx::read("qwen2_vl/frames.bin");
    let entries = gif_entries();
    assert!(entries.len() >= 7);
    for entry in entries {
        let file = format!("qwen2_vl/{}", entry["file"].as_str().unwrap());
        let bytes = fx::read(&file);
        let gif = parse_gif(&bytes, &file).unwrap();
        let n = entry["frames"].as_u64().unwrap() as usize;
        assert_eq!(gif.frame_count(), n, "{file}");
        let durations: Vec<u64> = gif.delays().map(|d| d.unwrap_or(0) as u64 * 10).collect();
        let want: Vec<u64> = entry["durations_ms"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(durations, want, "{file}");
        let all: Vec<usize> = (0..n).collect();
        let frames = gif.render(&all, &file, &ImageLimits::default()).unwrap();
        let want = fx::range(&blob, &entry);
        let size = (gif.width * gif.height * 3) as usize;
        for (k, frame) in frames.iter().enumerate() {
            let want = &want[k * size..(k + 1) * size];
            if frame.as_raw().as_slice() != want {
                let first = frame.as_raw().iter().zip(want).position(|(a, b)| a != b).unwrap();
                let (x, y) = ((first / 3) as u32 % gif.width, (first / 3) as u32 / gif.width);
                panic!("{file} frame {k}: first difference at ({x}, {y})");
            }
        }
        // Rendering only some frames gives the same pictures.
        let some = gif.render(&[1, n - 1], &file, &ImageLimits::default()).unwrap();
        assert_eq!(some, [frames[1].clone(), frames[n - 1].clone()], "{file}");
    }
}

/// Frame 0 agrees with the still-image decoder (the `image` crate plus `gif_canvas`).
#[test]
fn first_frame_matches_decode_image() {
    let mut files: Vec<String> =
        gif_entries().iter().map(|e| format!("qwen2_vl/{}", e["file"].as_str().unwrap())).collect();
    files.extend(
        ["palette.gif", "palette_trns.gif", "small_frame.gif", "small_frame_trns.gif"].map(|f| format!("decode/{f}")),
    );
    for file in files {
        let bytes = fx::read(&file);
        let still = decode_image(&bytes, &file, &ImageLimits::default()).unwrap();
        let gif = parse_gif(&bytes, &file).unwrap();
        let first = gif.render(&[0], &file, &ImageLimits::default()).unwrap();
        assert_eq!(first[0], still, "{file}");
    }
}

#[test]
fn broken_files_are_reported() {
    let file = "qwen2_vl/disposals.gif";
    let bytes = fx::read(file);
    let cut = &bytes[..bytes.len() - 30];
    let err = parse_gif(cut, "anim.gif").err().unwrap().to_string();
    assert_eq!(err, "anim.gif: corrupt or truncated image data (GIF data ends early)");
    let err = parse_gif(b"GIF89a", "anim.gif").err().unwrap().to_string();
    assert!(err.contains("GIF header is cut short"), "{err}");
    // A frame larger than the pixel limit is refused before its data is decoded.
    let gif = parse_gif(&bytes, file).unwrap();
    let small = ImageLimits { max_pixels: 20 };
    let err = gif.render(&[0], "anim.gif", &small).unwrap_err().to_string();
    assert!(err.starts_with("anim.gif frame 0: image is 7x5 = 35 pixels, over the limit of 20"), "{err}");
}
