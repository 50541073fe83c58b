//! Test-only access to the reference data that `scripts/fixtures/image_reference.py` makes with
//! Pillow and transformers (PIL back-end) under `tests/fixtures/image/`.

use std::path::PathBuf;

use ::image::RgbImage;
use serde_json::Value;

use super::{decode_image, ImageLimits};

pub(super) fn path(relative: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/image")).join(relative)
}

/// `index.json`: which blob range holds which reference output.
pub(super) fn index() -> Value {
    let text = std::fs::read_to_string(path("index.json")).expect("tests/fixtures/image/index.json");
    serde_json::from_str(&text).expect("index.json is JSON")
}

pub(super) fn read(relative: &str) -> Vec<u8> {
    std::fs::read(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The bytes of `blob` that an index entry's `offset` and `len` point at.
pub(super) fn range<'a>(blob: &'a [u8], entry: &Value) -> &'a [u8] {
    let offset = entry["offset"].as_u64().unwrap() as usize;
    let len = entry["len"].as_u64().unwrap() as usize;
    &blob[offset..offset + len]
}

/// One of the noisy input images, by its index name.
pub(super) fn input_image(name: &str) -> RgbImage {
    let file = format!("{name}.png");
    decode_image(&read(&file), &file, &ImageLimits::default()).unwrap()
}

pub(super) fn u32_field(entry: &Value, key: &str) -> u32 {
    entry[key].as_u64().unwrap_or_else(|| panic!("{key} in {entry}")) as u32
}
