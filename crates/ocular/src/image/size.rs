//! Image sizes as transformers' image processors write and use them: parsing `size` /
//! `crop_size` (`image_processing_utils.get_size_dict`) and the output-size rules of the PIL
//! back-end's `resize` (`image_transforms.get_resize_output_image_size`,
//! `get_size_with_aspect_ratio`, `image_utils.get_image_size_for_max_height_width`).

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A `size` or `crop_size` entry, in transformers' `SizeDict` forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSpec {
    /// `{"height": h, "width": w}` (or a bare int for `crop_size`, or `[h, w]`).
    HeightWidth { height: u32, width: u32 },
    /// `{"shortest_edge": n}` (or a bare int for `size`): scale so the short side is `n`.
    ShortestEdge(u32),
    /// `{"shortest_edge": n, "longest_edge": m}`: as above, unless the long side would pass `m`.
    ShortestLongest { shortest_edge: u32, longest_edge: u32 },
    /// `{"max_height": h, "max_width": w}`: the largest size with the same aspect that fits.
    MaxHeightWidth { max_height: u32, max_width: u32 },
}

impl SizeSpec {
    /// The (height, width) transformers' `PilBackend.resize` computes for an image of
    /// `height` x `width`. Zero when the rule rounds a side away.
    pub fn resize_target(self, height: u32, width: u32) -> (u32, u32) {
        match self {
            SizeSpec::HeightWidth { height, width } => (height, width),
            SizeSpec::ShortestEdge(n) => shortest_edge_size(height, width, n),
            SizeSpec::ShortestLongest { shortest_edge, longest_edge } => {
                size_with_aspect_ratio(height, width, shortest_edge, longest_edge)
            }
            SizeSpec::MaxHeightWidth { max_height, max_width } => {
                let scale = (max_height as f64 / height as f64).min(max_width as f64 / width as f64);
                ((height as f64 * scale) as u32, (width as f64 * scale) as u32)
            }
        }
    }
}

/// transformers' `get_resize_output_image_size(default_to_square=False)`: the short side
/// becomes `size` and the long side `int(size * long / short)`, truncated (not rounded).
fn shortest_edge_size(height: u32, width: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    // Python multiplies the ints exactly, then divides in double precision.
    let new_long = ((size as u64 * long as u64) as f64 / short as f64) as u32;
    if width <= height {
        (new_long, size)
    } else {
        (size, new_long)
    }
}

/// transformers' `get_size_with_aspect_ratio(image_size, size, max_size)`. Python's `round` is
/// round-half-to-even; the other conversions truncate.
fn size_with_aspect_ratio(height: u32, width: u32, size: u32, max_size: u32) -> (u32, u32) {
    let (mut size, mut raw_size) = (size, None);
    let min_side = height.min(width) as f64;
    let max_side = height.max(width) as f64;
    if max_side / min_side * size as f64 > max_size as f64 {
        let raw = max_size as f64 * min_side / max_side;
        raw_size = Some(raw);
        size = raw.round_ties_even() as u32;
    }
    if (height <= width && height == size) || (width <= height && width == size) {
        (height, width)
    } else if width < height {
        let oh = match raw_size {
            Some(raw) => raw * height as f64 / width as f64,
            None => (size as u64 * height as u64) as f64 / width as f64,
        };
        (oh as u32, size)
    } else {
        let ow = match raw_size {
            Some(raw) => raw * width as f64 / height as f64,
            None => (size as u64 * width as u64) as f64 / height as f64,
        };
        (size, ow as u32)
    }
}

/// Reads a size the way transformers' `get_size_dict` does: an int, an `[h, w]` pair, or a
/// dict with exactly one of the accepted key sets.
fn parse_size(v: &Value, int_is_square: bool) -> Result<SizeSpec, String> {
    let int = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    if let Some(n) = int(v) {
        return Ok(if int_is_square {
            SizeSpec::HeightWidth { height: n, width: n }
        } else {
            SizeSpec::ShortestEdge(n)
        });
    }
    if let Some([h, w]) = v.as_array().map(Vec::as_slice) {
        if let (Some(height), Some(width)) = (int(h), int(w)) {
            return Ok(SizeSpec::HeightWidth { height, width });
        }
    }
    let Some(map) = v.as_object() else {
        return Err(format!("expected an integer, [height, width] or an object, got {v}"));
    };
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let get = |k: &str| int(&map[k]).ok_or_else(|| format!("`{k}` must be a non-negative integer, got {}", map[k]));
    Ok(match keys.as_slice() {
        ["height", "width"] => SizeSpec::HeightWidth { height: get("height")?, width: get("width")? },
        ["shortest_edge"] => SizeSpec::ShortestEdge(get("shortest_edge")?),
        ["longest_edge", "shortest_edge"] => {
            SizeSpec::ShortestLongest { shortest_edge: get("shortest_edge")?, longest_edge: get("longest_edge")? }
        }
        ["max_height", "max_width"] => {
            SizeSpec::MaxHeightWidth { max_height: get("max_height")?, max_width: get("max_width")? }
        }
        _ => {
            return Err(format!(
                "unsupported keys {keys:?} (expected height+width, shortest_edge, \
                 shortest_edge+longest_edge or max_height+max_width)"
            ))
        }
    })
}

pub(super) fn size_de<'de, D: Deserializer<'de>>(d: D) -> Result<SizeSpec, D::Error> {
    parse_size(&Value::deserialize(d)?, false).map_err(|m| serde::de::Error::custom(format!("`size`: {m}")))
}

pub(super) fn crop_size_de<'de, D: Deserializer<'de>>(d: D) -> Result<SizeSpec, D::Error> {
    parse_size(&Value::deserialize(d)?, true).map_err(|m| serde::de::Error::custom(format!("`crop_size`: {m}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_truncates() {
        // 300x199 (w x h) -> short side 199 becomes 40; 40 * 300 / 199 = 60.30 -> 60.
        assert_eq!(shortest_edge_size(199, 300, 40), (40, 60));
        // Portrait: 23x41 -> 40 * 41 / 23 = 71.3 -> 71.
        assert_eq!(shortest_edge_size(41, 23, 40), (71, 40));
        assert_eq!(shortest_edge_size(50, 50, 7), (7, 7));
    }

    #[test]
    fn aspect_ratio_with_longest_edge_rounds_half_even() {
        // 100 wide, 1000 high, shortest 50, longest 100: the long side would be 1000, so the
        // short side becomes 100 * 100 / 1000 = 10 and the long side int(10 * 1000 / 100).
        assert_eq!(size_with_aspect_ratio(1000, 100, 50, 100), (100, 10));
        // No cap hit: like shortest-edge.
        assert_eq!(size_with_aspect_ratio(199, 300, 40, 1000), (40, 60));
        // 2 wide, 1 high, shortest 3, longest 5: raw = 5 * 1 / 2 = 2.5 rounds to 2 (half to
        // even), and the width is int(2.5 * 2 / 1) = 5.
        assert_eq!(size_with_aspect_ratio(1, 2, 3, 5), (2, 5));
    }
}
