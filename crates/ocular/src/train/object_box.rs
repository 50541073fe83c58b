//! Where an object's box edges lie, taught to the image tokens it covers. A grounding answer
//! spells its box in 0-1000 digits; the pointer (`train::pointer`) makes the box positions
//! look at the object's tokens, but what they read there must already say where the box is.
//! Each image token knows its own place (`train::position`), and the vision tower tells it
//! what part of which object it shows; with `[optim] box_layer = k`, a throwaway linear head
//! on the language model's stream after its first `k` layers learns, at every image token an
//! answer's object covers (`Example::focus`), the hundreds and tens digits of each of that
//! object's box edges (x1, y1, x2, y2): what the answer then only has to copy. Trained on
//! question steps with the answers and dropped from the saved folder, like the position head.

use candle_core::Tensor;
use candle_nn::{Linear, Module, VarBuilder};

use super::loss::summed_ce;
use super::parallel::Part;
use super::scenes::to_grid;
use crate::error::Result;

/// Digits per edge (hundreds, tens), four edges.
pub const GROUPS: usize = 8;
const DIGITS: usize = 10;

/// One object's covered image tokens (rows of a packed sequence) and its box's digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectBox {
    pub keys: Vec<u32>,
    pub digits: [u32; GROUPS],
}

/// The hundreds and tens digits of `bbox`'s (pixels of an image `size` = `[width, height]`)
/// edges on the 0-1000 grid a box answer uses, x1, y1, x2, y2 in turn; an edge at 1000 is
/// taught as 99x (a head of 10 classes per digit).
pub fn box_digits(bbox: [f32; 4], size: [u32; 2]) -> [u32; GROUPS] {
    let extents = [size[0], size[1], size[0], size[1]];
    let mut digits = [0; GROUPS];
    for (i, (&px, &extent)) in bbox.iter().zip(&extents).enumerate() {
        let v = to_grid(px, extent).min(999);
        digits[2 * i] = v / 100;
        digits[2 * i + 1] = v / 10 % 10;
    }
    digits
}

pub struct BoxHead {
    linear: Linear,
    layer: usize,
}

impl BoxHead {
    /// Variables under `object_box_head` in `vb`, reading the stream after `layer` layers.
    pub fn new(vb: VarBuilder, hidden: usize, layer: usize) -> Result<Self> {
        Ok(Self { linear: candle_nn::linear(hidden, GROUPS * DIGITS, vb.pp("object_box_head"))?, layer })
    }

    /// How many of the language model's layers run before the head reads the stream.
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// The summed cross-entropy of every covered token's box digits, read from `tapped` (seq,
    /// hidden). A token that two boxes claim learns the first's. `None` without boxes.
    pub fn part(&self, tapped: &Tensor, boxes: &[ObjectBox]) -> Result<Option<Part>> {
        let (rows, targets) = box_labels(boxes);
        summed_ce(&self.linear.forward(tapped)?, &rows, 0, GROUPS, DIGITS, &targets)
    }
}

/// Each labelled row once, with its box's digits.
fn box_labels(boxes: &[ObjectBox]) -> (Vec<u32>, Vec<u32>) {
    let (mut rows, mut targets) = (vec![], vec![]);
    for b in boxes {
        for &k in &b.keys {
            if !rows.contains(&k) {
                rows.push(k);
                targets.extend_from_slice(&b.digits);
            }
        }
    }
    (rows, targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn the_loss_sums_each_labelled_tokens_digit_cross_entropy() {
        // Weights zero, each group's bias favouring digit 3 by 5: p(3) = e^5 / (e^5 + 9).
        let vars = VarMap::new();
        let head = BoxHead::new(VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu), 4, 1).unwrap();
        let bias: Vec<f32> = (0..GROUPS * DIGITS).map(|i| if i % DIGITS == 3 { 5.0 } else { 0.0 }).collect();
        for (name, var) in vars.data().lock().unwrap().iter() {
            let value = match name.as_str() {
                "object_box_head.bias" => Tensor::new(bias.as_slice(), &Device::Cpu).unwrap(),
                _ => var.as_tensor().zeros_like().unwrap(),
            };
            var.set(&value).unwrap();
        }
        let stream = Tensor::ones((6, 4), DType::F32, &Device::Cpu).unwrap();
        let mut digits = [3; GROUPS];
        digits[0] = 7;
        // Rows 1 and 4 labelled, row 4 claimed twice (the first box wins).
        let boxes = [ObjectBox { keys: vec![1, 4], digits }, ObjectBox { keys: vec![4], digits: [0; GROUPS] }];
        let part = head.part(&stream, &boxes).unwrap().unwrap();
        assert_eq!(part.count, (2 * GROUPS) as f64);
        let norm = (5f32.exp() + 9.0).ln();
        let want = 2.0 * ((GROUPS - 1) as f32 * (norm - 5.0) + norm);
        assert!((part.sum.to_scalar::<f32>().unwrap() - want).abs() < 1e-4);
        assert!(head.part(&stream, &[]).unwrap().is_none());
    }

    #[test]
    fn each_edge_gives_its_hundreds_and_tens_on_the_answer_grid() {
        // A 200 x 100 image: x 31 px -> 155, y 12.5 -> 125, x 200 -> 1000 (taught as 999), y 99 -> 990.
        assert_eq!(box_digits([31.0, 12.5, 200.0, 99.0], [200, 100]), [1, 5, 1, 2, 9, 9, 9, 9]);
    }

    #[test]
    fn a_token_two_boxes_claim_learns_the_first() {
        let a = ObjectBox { keys: vec![3, 4], digits: [1; GROUPS] };
        let b = ObjectBox { keys: vec![4, 9], digits: [2; GROUPS] };
        let (rows, targets) = box_labels(&[a, b]);
        assert_eq!(rows, vec![3, 4, 9]);
        assert_eq!(targets, [[1; GROUPS], [1; GROUPS], [2; GROUPS]].concat());
    }
}
