//! Where each patch of a Qwen2-VL image sits, and which patches attend to which: rotary
//! coordinates in merge-block order, one attention segment per frame, and Qwen2.5-VL's windows.
//! Follows transformers' `vision_utils.py` (`get_vision_position_ids`, `get_vision_cu_seqlens`,
//! `get_vision_window_index`). Grids are (t, h, w) in patches.

/// (h, w) of every patch in the order the processor emits them: m x m merge blocks, blocks
/// row-major, the same coordinates again for each frame.
pub fn patch_positions(grids: &[[usize; 3]], m: usize) -> Vec<[usize; 2]> {
    let mut out = Vec::new();
    for &[t, h, w] in grids {
        let mut frame = Vec::with_capacity(h * w);
        for bh in 0..h / m {
            for bw in 0..w / m {
                for ih in 0..m {
                    for iw in 0..m {
                        frame.push([bh * m + ih, bw * m + iw]);
                    }
                }
            }
        }
        for _ in 0..t {
            out.extend_from_slice(&frame);
        }
    }
    out
}

/// Cumulative boundaries of the attention segments: each frame attends only to itself.
pub fn frame_segments(grids: &[[usize; 3]]) -> Vec<usize> {
    let mut cu = vec![0];
    for &[t, h, w] in grids {
        for _ in 0..t {
            cu.push(cu.last().unwrap() + h * w);
        }
    }
    cu
}

/// Qwen2.5-VL windows. Returns the new order of merged units (each m x m patches) that puts
/// every window's units together, and the window boundaries in patches over that order.
pub fn window_order(grids: &[[usize; 3]], m: usize, window_size: usize, patch_size: usize) -> (Vec<usize>, Vec<usize>) {
    let units_per_window = window_size / m / patch_size;
    let mut order = Vec::new();
    let mut cu = vec![0];
    let mut base = 0;
    for &[t, h, w] in grids {
        let (lh, lw) = (h / m, w / m);
        // The reference pads the grid up to whole windows (by a whole window when it already
        // fits) and drops the padding; empty windows add no boundary.
        let windows_h = (lh + units_per_window - lh % units_per_window) / units_per_window;
        let windows_w = (lw + units_per_window - lw % units_per_window) / units_per_window;
        for f in 0..t {
            for wh in 0..windows_h {
                for ww in 0..windows_w {
                    let mut count = 0;
                    for y in wh * units_per_window..((wh + 1) * units_per_window).min(lh) {
                        for x in ww * units_per_window..((ww + 1) * units_per_window).min(lw) {
                            order.push(base + f * lh * lw + y * lw + x);
                            count += 1;
                        }
                    }
                    if count > 0 {
                        cu.push(cu.last().unwrap() + count * m * m);
                    }
                }
            }
        }
        base += t * lh * lw;
    }
    (order, cu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_merge_blocks() {
        let p = patch_positions(&[[1, 2, 4]], 2);
        assert_eq!(p, vec![[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3], [1, 2], [1, 3]]);
        assert_eq!(patch_positions(&[[2, 2, 2]], 2).len(), 8);
    }

    #[test]
    fn one_segment_per_frame() {
        assert_eq!(frame_segments(&[[2, 2, 4], [1, 4, 4]]), vec![0, 8, 16, 32]);
    }

    #[test]
    fn windows_group_units_and_skip_empty_ones() {
        // 3 x 3 merged units, windows of 2 x 2 units: windows of 4, 2, 2 and 1 units.
        let (order, cu) = window_order(&[[1, 6, 6]], 2, 56, 14);
        assert_eq!(order, vec![0, 1, 3, 4, 2, 5, 6, 7, 8]);
        assert_eq!(cu, vec![0, 16, 24, 32, 36]);
        // A grid that fits whole windows still pads by one window, which stays empty.
        let (order, cu) = window_order(&[[1, 4, 4]], 2, 56, 14);
        assert_eq!(order, vec![0, 1, 2, 3]);
        assert_eq!(cu, vec![0, 16]);
    }
}
