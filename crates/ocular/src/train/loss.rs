//! The cross-entropy pieces the auxiliary heads (`dense`, `position`) sum their labels with.

use candle_core::{Tensor, D};

use super::parallel::Part;
use crate::error::Result;

/// The summed cross-entropy of `groups` independent `classes`-way choices at each of `rows`,
/// their logits in columns `first..first + groups * classes` (group after group); `targets`
/// holds each row's choices, row after row. `None` without rows.
pub fn summed_ce(
    logits: &Tensor,
    rows: &[u32],
    first: usize,
    groups: usize,
    classes: usize,
    targets: &[u32],
) -> Result<Option<Part>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let dev = logits.device();
    let picked = logits.index_select(&Tensor::new(rows, dev)?, 0)?.narrow(1, first, groups * classes)?.reshape((
        rows.len(),
        groups,
        classes,
    ))?;
    let targets = Tensor::from_vec(targets.to_vec(), (rows.len(), groups, 1), dev)?;
    let nll = candle_nn::ops::log_softmax(&picked, D::Minus1)?.gather(&targets, 2)?.neg()?.sum_all()?;
    Ok(Some(Part { sum: nll, count: (rows.len() * groups) as f64 }))
}

/// One part summing `parts` (`None` where all are).
pub fn add_parts(parts: Vec<Option<Part>>) -> Result<Option<Part>> {
    let mut total: Option<Part> = None;
    for part in parts.into_iter().flatten() {
        total = Some(match total {
            Some(t) => Part { sum: (t.sum + part.sum)?, count: t.count + part.count },
            None => part,
        });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn grouped_cross_entropy_sums_each_group_s_choice() {
        // Two rows of 1 + 2 groups x 2 classes; the first column is skipped.
        let logits = Tensor::new(&[[9.0f32, 0.0, 0.0, 2.0, 0.0], [9.0, 1.0, 0.0, 0.0, 3.0]], &Device::Cpu).unwrap();
        let part = summed_ce(&logits, &[1, 0], 1, 2, 2, &[0, 1, 1, 0]).unwrap().unwrap();
        let ln = |x: f32| x.ln();
        // Row 1 picks class 0 of (1, 0) and class 1 of (0, 3); row 0 class 1 of (0, 0) and 0 of (2, 0).
        let expected = -(1.0 - ln(1f32.exp() + 1.0))
            - (3.0 - ln(1.0 + 3f32.exp()))
            - (0.0 - ln(2.0))
            - (2.0 - ln(2f32.exp() + 1.0));
        assert!((part.sum.to_scalar::<f32>().unwrap() - expected).abs() < 1e-5);
        assert_eq!(part.count, 4.0);
        assert!(summed_ce(&logits, &[], 1, 2, 2, &[]).unwrap().is_none());
        let total = add_parts(vec![None, Some(part), None]).unwrap().unwrap();
        assert_eq!(total.count, 4.0);
        assert!(add_parts(vec![None]).unwrap().is_none());
    }
}
