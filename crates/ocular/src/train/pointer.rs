//! Where a box answer looks, taught. To write a box, the answer must first find the named
//! object among the image tokens; a probe of the built-in model
//! (`scripts/experiments/ground_probe.py`) found its box positions knowing what they looked
//! for but their attention hardly on it. With `[optim] pointer_layer = k`, one head of the
//! language model's layer after its first `k` (`pointer_head`) learns, at every position
//! that predicts a grounding answer's box (from `<|box_start|>` to the last coordinate), to
//! put its attention on the image tokens the true box covers: the loss is minus the log of
//! the attention that falls there. With `pointer_objects`, every row of the other one-image
//! answers about objects learns the same about the objects they are read from (the object
//! asked about, those counted, a relation's anchor and answer: `Example::focus`). With
//! `pointer_absent` too, an answer about objects the scene lacks ("is there a red circle?"
//! "no"; "how many stars?" "0") learns to look at the image's `<|vision_start|>` token: a fixed
//! place that means "nothing matches" (measured on the built-in model's run: no task moved
//! beyond noise, configs/experiments/pointer-absent.toml). With `pointer_tally`, count and
//! existence answers look at the image's `<|vision_end|>` token instead, where the inventory
//! head (`train::inventory`) teaches the image's tally. It trains the model's own weights,
//! so it adds nothing to the saved folder.

use candle_core::Tensor;

use super::config::Optim;
use super::parallel::Part;
use crate::error::{Error, Result};

/// A `pointer_layer` past the language model's layers, or a `pointer_head` past its heads, is
/// an error naming the field.
pub fn check(o: &Optim, layers: usize, heads: usize) -> Result<()> {
    if o.pointer_layer == 0 {
        return Ok(());
    }
    if o.pointer_layer >= layers {
        return Err(Error::Invalid(format!(
            "optim.pointer_layer {} must leave a layer after it: the language model has {layers} layers",
            o.pointer_layer
        )));
    }
    if o.pointer_head >= heads {
        return Err(Error::Invalid(format!(
            "optim.pointer_head {} is past the language model's {heads} attention heads",
            o.pointer_head
        )));
    }
    Ok(())
}

/// One answer's supervised rows of a packed sequence, and the image tokens (rows of the same
/// sequence) that the boxes of what it is about cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub queries: Vec<u32>,
    pub keys: Vec<u32>,
    /// A box answer's (the rows predicting its box), else an answer about objects (all its rows).
    pub grounding: bool,
    /// An answer about objects the scene lacks: its key is the image's start token.
    pub absent: bool,
    /// A count or existence answer's alternative key, the image's end token, where the
    /// inventory head teaches the image's tally (`[optim] pointer_tally`); else empty.
    pub tally: Vec<u32>,
}

impl Pointer {
    /// The keys this pointer teaches its rows to look at: the tally's with `tally` where it
    /// has one, else its own.
    pub fn targets(&self, tally: bool) -> &[u32] {
        if tally && !self.tally.is_empty() {
            &self.tally
        } else {
            &self.keys
        }
    }
}

/// The cells of a `grid` (`[rows, cols]` merged tokens, raster order) covering `bbox`
/// (`[x1, y1, x2, y2]` pixels of an image `size` = `[width, height]`): those whose centre the
/// box holds, or the one holding the box's centre when it holds none.
pub fn covered_cells(bbox: [f32; 4], size: [u32; 2], grid: [usize; 2]) -> Vec<usize> {
    let [rows, cols] = grid;
    let (x1, y1, x2, y2) =
        (bbox[0] / size[0] as f32, bbox[1] / size[1] as f32, bbox[2] / size[0] as f32, bbox[3] / size[1] as f32);
    let centre = |i: usize, n: usize| (i as f32 + 0.5) / n as f32;
    let cells: Vec<usize> = (0..rows * cols)
        .filter(|&t| {
            let (x, y) = (centre(t % cols, cols), centre(t / cols, rows));
            (x1..=x2).contains(&x) && (y1..=y2).contains(&y)
        })
        .collect();
    if !cells.is_empty() {
        return cells;
    }
    let cell = |v: f32, n: usize| ((v * n as f32) as usize).min(n - 1);
    vec![cell((y1 + y2) / 2.0, rows) * cols + cell((x1 + x2) / 2.0, cols)]
}

/// The pointers `o` asks to supervise: boxes always; answers about objects with
/// `pointer_objects`; those about missing objects with `pointer_absent` too, or, with
/// `pointer_tally`, where they are counts or existence questions.
pub fn supervised<'a>(pointers: &'a [Pointer], o: &Optim) -> Vec<&'a Pointer> {
    let tallied = |p: &Pointer| o.pointer_tally && !p.tally.is_empty();
    pointers
        .iter()
        .filter(|p| p.grounding || (o.pointer_objects && (!p.absent || o.pointer_absent || tallied(p))))
        .collect()
}

/// Minus the log of the attention that head `head` of `weights` (heads, queries, seq; the
/// queries of `pointers` one after another) puts on each pointer's keys (its tally's with
/// `tally`, see [`Pointer::targets`]), summed over the queries. `None` without pointers.
pub fn part(weights: &Tensor, pointers: &[&Pointer], head: usize, tally: bool) -> Result<Option<Part>> {
    let n: usize = pointers.iter().map(|p| p.queries.len()).sum();
    if n == 0 {
        return Ok(None);
    }
    let seq = weights.dim(2)?;
    let mut on_box = vec![0f32; n * seq];
    let mut row = 0;
    for p in pointers {
        for _ in &p.queries {
            for &k in p.targets(tally) {
                on_box[row * seq + k as usize] = 1.0;
            }
            row += 1;
        }
    }
    let on_box = Tensor::from_vec(on_box, (n, seq), weights.device())?;
    let held = (weights.get(head)? * on_box)?.sum(1)?;
    // The floor keeps the log finite where a query cannot see its keys at all.
    let sum = held.clamp(1e-9f32, 1f32)?.log()?.neg()?.sum_all()?;
    Ok(Some(Part { sum, count: n as f64 }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_cells_whose_centres_the_box_holds() {
        // A 100 x 50 image on 2 x 4 cells (25 x 25 pixels each): centres at x 12.5, 37.5, ...
        assert_eq!(covered_cells([30.0, 0.0, 70.0, 20.0], [100, 50], [2, 4]), vec![1, 2]);
        assert_eq!(covered_cells([0.0, 0.0, 100.0, 50.0], [100, 50], [2, 4]), (0..8).collect::<Vec<_>>());
        // Too small to hold a centre: the cell under its own centre.
        assert_eq!(covered_cells([80.0, 30.0, 84.0, 34.0], [100, 50], [2, 4]), vec![7]);
    }

    #[test]
    fn which_pointers_are_supervised_follows_the_config() {
        let pointer = |grounding, absent| Pointer { queries: vec![], keys: vec![], grounding, absent, tally: vec![] };
        let counted = Pointer { tally: vec![3], ..pointer(false, true) };
        let all = [pointer(true, false), pointer(false, false), pointer(false, true), counted];
        let kinds = |objects, absent, tally| {
            let o =
                Optim { pointer_objects: objects, pointer_absent: absent, pointer_tally: tally, ..Default::default() };
            supervised(&all, &o).iter().map(|p| (p.grounding, p.absent, p.tally.len())).collect::<Vec<_>>()
        };
        assert_eq!(kinds(false, false, false), [(true, false, 0)]);
        assert_eq!(kinds(true, false, false), [(true, false, 0), (false, false, 0)]);
        assert_eq!(kinds(true, true, false), [(true, false, 0), (false, false, 0), (false, true, 0), (false, true, 1)]);
        // With the tally, an absent count or existence answer is supervised (at its tally).
        assert_eq!(kinds(true, false, true), [(true, false, 0), (false, false, 0), (false, true, 1)]);
    }

    #[test]
    fn the_loss_is_minus_the_log_of_the_attention_on_the_box() {
        // 2 heads, 2 queries, 3 keys.
        let w =
            Tensor::new(&[[[0.5f32, 0.25, 0.25], [0.1, 0.1, 0.8]], [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], &Device::Cpu)
                .unwrap();
        let pointers = [
            Pointer { queries: vec![7], keys: vec![1, 2], grounding: true, absent: false, tally: vec![] },
            Pointer { queries: vec![9], keys: vec![0], grounding: false, absent: true, tally: vec![2] },
        ];
        let pointers: Vec<&Pointer> = pointers.iter().collect();
        let p = part(&w, &pointers, 0, false).unwrap().unwrap();
        assert_eq!(p.count, 2.0);
        let want = -(0.5f32.ln() + 0.1f32.ln());
        assert!((p.sum.to_scalar::<f32>().unwrap() - want).abs() < 1e-6);
        // With the tally, the second pointer's row looks at key 2 instead of key 0.
        let p = part(&w, &pointers, 0, true).unwrap().unwrap();
        assert!((p.sum.to_scalar::<f32>().unwrap() + (0.5f32.ln() + 0.8f32.ln())).abs() < 1e-6);
        let p = part(&w, &pointers, 1, false).unwrap().unwrap();
        assert!((p.sum.to_scalar::<f32>().unwrap() - (-(1e-9f32.ln()))).abs() < 1e-3);
        assert!(part(&w, &[], 0, false).unwrap().is_none());
    }
}
