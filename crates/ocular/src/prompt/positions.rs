//! Qwen2-VL's 3-D position ids (M-RoPE): text tokens count up on all three axes together; the
//! tokens of an image or video take (time, row, column) coordinates on its merged grid, offset
//! by the position where it starts. Follows `get_rope_index` of transformers 5.24, where the
//! text after a vision span resumes at start + max(rows, columns).

use crate::error::{Error, Result};

/// One image or video as the language model sees it.
#[derive(Debug, Clone, Copy)]
pub struct VisionSpan {
    /// The placeholder token its tokens repeat.
    pub token: u32,
    /// (t, h, w) after merging: tokens = t * h * w.
    pub grid: [usize; 3],
    /// Temporal position step per grid frame (Qwen2.5-VL video: tokens_per_second x seconds
    /// per grid frame; otherwise 1).
    pub time_interval: f32,
}

/// Positions for `ids`, consuming `spans` in order for each run of their tokens, and the offset
/// (`rope_delta`) that later tokens add to their index: next position = len + delta.
pub fn mrope_positions(ids: &[u32], spans: &[VisionSpan]) -> Result<(Vec<[i64; 3]>, i64)> {
    let is_media = |t: u32| spans.iter().any(|s| s.token == t);
    let mut positions = Vec::with_capacity(ids.len());
    let mut next_span = spans.iter();
    let mut current: i64 = 0;
    let mut i = 0;
    while i < ids.len() {
        if !is_media(ids[i]) {
            positions.push([current; 3]);
            current += 1;
            i += 1;
            continue;
        }
        let run = ids[i..].iter().take_while(|&&t| t == ids[i]).count();
        let span = next_span.next().ok_or_else(|| {
            Error::Invalid(format!("the prompt has more media token runs than media (token {} at {i})", ids[i]))
        })?;
        let [t, h, w] = span.grid;
        if span.token != ids[i] || run != t * h * w {
            return Err(Error::Invalid(format!(
                "media tokens at {i}: {run} x token {} where the media expects {} x token {}",
                ids[i],
                t * h * w,
                span.token
            )));
        }
        for ti in 0..t {
            let tpos = (ti as f32 * span.time_interval) as i64 + current;
            for y in 0..h {
                for x in 0..w {
                    positions.push([tpos, current + y as i64, current + x as i64]);
                }
            }
        }
        current += h.max(w) as i64;
        i += run;
    }
    if next_span.next().is_some() {
        return Err(Error::Invalid("more media than media token runs in the prompt".into()));
    }
    let max = positions.iter().flat_map(|p| p.iter().copied()).max().unwrap_or(-1);
    Ok((positions, max + 1 - ids.len() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_counts_up_and_images_take_grid_coordinates() {
        // 2 text tokens, a 1x2x3 image (token 9), 1 text token.
        let ids = [1, 2, 9, 9, 9, 9, 9, 9, 3];
        let span = VisionSpan { token: 9, grid: [1, 2, 3], time_interval: 1.0 };
        let (pos, delta) = mrope_positions(&ids, &[span]).unwrap();
        assert_eq!(pos[0], [0, 0, 0]);
        assert_eq!(pos[2], [2, 2, 2]);
        assert_eq!(pos[7], [2, 3, 4]);
        // Text resumes at start + max(h, w).
        assert_eq!(pos[8], [5, 5, 5]);
        assert_eq!(delta, 6 - 9);
    }

    #[test]
    fn video_time_steps_scale_and_truncate() {
        let ids = [7, 7, 7, 7];
        let span = VisionSpan { token: 7, grid: [4, 1, 1], time_interval: 12.5 };
        let (pos, _) = mrope_positions(&ids, &[span]).unwrap();
        assert_eq!(pos.iter().map(|p| p[0]).collect::<Vec<_>>(), vec![0, 12, 25, 37]);
    }

    #[test]
    fn a_run_of_the_wrong_length_is_an_error() {
        let span = VisionSpan { token: 9, grid: [1, 2, 2], time_interval: 1.0 };
        let e = mrope_positions(&[9, 9, 9], &[span]).unwrap_err().to_string();
        assert!(e.contains("3 x token 9 where the media expects 4"), "{e}");
    }
}
