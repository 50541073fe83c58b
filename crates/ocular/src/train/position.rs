//! Where each image token lies, taught to the language model. Grounding answers a box on a
//! 0-1000 grid over the image, but Qwen2-VL's vision tower has rotary positions only (its
//! tokens carry content, not place), so only the language model can know where a token is:
//! from its M-RoPE position relative to the text around the image. A throwaway linear head on
//! the residual stream after the language model's first `position_layer` layers learns, at
//! every image token, the tenth of the image's width and of its height that holds the token's
//! centre (the first digit of its 0-1000 coordinates). Trained on question steps with the
//! answers and dropped from the saved folder, like the dense head.

use candle_core::Tensor;
use candle_nn::{Linear, Module, VarBuilder};

use super::loss::summed_ce;
use super::parallel::Part;
use crate::error::{Error, Result};

/// Places along each axis: tenths of the 0-1000 grid.
pub const BINS: usize = 10;

pub struct PositionHead {
    linear: Linear,
    layer: usize,
}

impl PositionHead {
    /// Variables under `position_head` in `vb`, reading the stream after `layer` layers.
    pub fn new(vb: VarBuilder, hidden: usize, layer: usize) -> Result<Self> {
        Ok(Self { linear: candle_nn::linear(hidden, 2 * BINS, vb.pp("position_head"))?, layer })
    }

    /// How many of the language model's layers run before the head reads the stream.
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// The summed cross-entropy of each image token's column and row tenths, read from
    /// `tapped` (seq, hidden), the stream of the packed sequence `ids`, whose image tokens
    /// (`image_token`) hold images of merged `grids` (`[rows, cols]`) one after another.
    pub fn part(&self, tapped: &Tensor, ids: &[u32], image_token: u32, grids: &[[usize; 2]]) -> Result<Option<Part>> {
        let (rows, targets) = position_labels(ids, image_token, grids)?;
        summed_ce(&self.linear.forward(tapped)?, &rows, 0, 2, BINS, &targets)
    }
}

/// The rows of `ids` holding image tokens, and per row its column's then its row's tenth.
pub fn position_labels(ids: &[u32], image_token: u32, grids: &[[usize; 2]]) -> Result<(Vec<u32>, Vec<u32>)> {
    let rows: Vec<u32> = (0..ids.len() as u32).filter(|&i| ids[i as usize] == image_token).collect();
    let expected: usize = grids.iter().map(|[h, w]| h * w).sum();
    if rows.len() != expected {
        return Err(Error::Invalid(format!(
            "position labels: the sequence holds {} image tokens but its image grids {grids:?} make {expected}",
            rows.len()
        )));
    }
    let tenth = |i: usize, n: usize| (((2 * i + 1) * BINS) / (2 * n)) as u32;
    let targets =
        grids.iter().flat_map(|&[h, w]| (0..h * w).flat_map(move |t| [tenth(t % w, w), tenth(t / w, h)])).collect();
    Ok((rows, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_image_token_learns_the_tenth_that_holds_its_centre() {
        const IMG: u32 = 7;
        // Text, a 2 x 4 image, text, a 1 x 1 image.
        let ids = [1, IMG, IMG, IMG, IMG, IMG, IMG, IMG, IMG, 2, IMG, 3];
        let (rows, targets) = position_labels(&ids, IMG, &[[2, 4], [1, 1]]).unwrap();
        assert_eq!(rows, vec![1, 2, 3, 4, 5, 6, 7, 8, 10]);
        // Column centres at 1/8, 3/8, 5/8, 7/8 of the width; row centres at 1/4 and 3/4.
        let expected = [[1, 2], [3, 2], [6, 2], [8, 2], [1, 7], [3, 7], [6, 7], [8, 7], [5, 5]].concat();
        assert_eq!(targets, expected);
        let e = position_labels(&ids, IMG, &[[2, 4]]).unwrap_err().to_string();
        assert!(e.contains("9 image tokens") && e.contains("make 8"), "{e}");
    }
}
