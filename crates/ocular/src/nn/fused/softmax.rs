//! Softmax over the last dimension with the attention's scale and additive mask folded in:
//! one pass forward over the scores, one back.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::slice;

/// `softmax(x * scale + mask)` over the last dimension; `mask` is (queries, keys) and repeats
/// over every leading dimension of `x`.
pub fn softmax(x: &Tensor, scale: f32, mask: Option<&Tensor>) -> Result<Tensor> {
    let x = x.contiguous()?;
    match mask {
        None => x.apply_op1(Softmax { scale }),
        Some(m) => x.apply_op2(&m.contiguous()?, Softmax { scale }),
    }
}

#[derive(Clone, Copy)]
struct Softmax {
    scale: f32,
}

impl Softmax {
    fn run(&self, x: &[f32], shape: &Shape, mask: Option<&[f32]>) -> Result<(CpuStorage, Shape)> {
        let cols = shape.dims().last().copied().unwrap_or(1).max(1);
        if let Some(m) = mask {
            let rows = shape.dims().iter().rev().nth(1).copied().unwrap_or(1);
            if m.len() != rows * cols {
                candle_core::bail!("softmax mask has {} values, expected {rows} x {cols}", m.len());
            }
        }
        let mut out = vec![0f32; x.len()];
        for (r, (xs, ys)) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)).enumerate() {
            let m = mask.map(|m| {
                let at = (r * cols) % m.len();
                &m[at..at + cols]
            });
            for (j, (y, &v)) in ys.iter_mut().zip(xs).enumerate() {
                *y = v * self.scale + m.map_or(0.0, |m| m[j]);
            }
            let max = ys.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for y in ys.iter_mut() {
                *y = (*y - max).exp();
                sum += *y;
            }
            for y in ys.iter_mut() {
                *y /= sum;
            }
        }
        Ok((CpuStorage::F32(out), shape.clone()))
    }

    /// dx = scale * y * (g - sum(g * y)) per row; the mask takes no gradient.
    fn grad(&self, res: &Tensor, grad: &Tensor) -> Result<Tensor> {
        res.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad { scale: self.scale })
    }
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "ocular-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(slice(s, l, "softmax")?, l.shape(), None)
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.grad(res, grad)?))
    }
}

impl CustomOp2 for Softmax {
    fn name(&self) -> &'static str {
        "ocular-masked-softmax"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(slice(s1, l1, "softmax")?, l1.shape(), Some(slice(s2, l2, "softmax mask")?))
    }

    fn bwd(&self, _x: &Tensor, _m: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.grad(res, grad)?), None))
    }
}

struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "ocular-softmax-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (slice(s1, l1, "softmax grad")?, slice(s2, l2, "softmax grad")?);
        let cols = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; y.len()];
        for ((ys, gs), ds) in y.chunks_exact(cols).zip(g.chunks_exact(cols)).zip(out.chunks_exact_mut(cols)) {
            let dot: f32 = ys.iter().zip(gs).map(|(y, g)| y * g).sum();
            for ((d, &y), &g) in ds.iter_mut().zip(ys).zip(gs) {
                *d = self.scale * y * (g - dot);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{random, same_value_and_grads};
    use super::*;
    use candle_core::{DType, Device, D};

    #[test]
    fn softmax_matches_the_composed_formula_with_and_without_a_mask() {
        let x = random(&[2, 3, 4, 5], 1);
        let composed = |t: &[Tensor], mask: Option<&Tensor>| {
            let s = (&t[0] * 0.5).unwrap();
            let s = match mask {
                Some(m) => s.broadcast_add(m).unwrap(),
                None => s,
            };
            candle_nn::ops::softmax(&s, D::Minus1).unwrap()
        };
        same_value_and_grads(&[x.clone()], |t| softmax(&t[0], 0.5, None).unwrap(), |t| composed(t, None));
        let mask = crate::nn::causal_mask(4, 1, &Device::Cpu).unwrap();
        same_value_and_grads(&[x], |t| softmax(&t[0], 0.5, Some(&mask)).unwrap(), |t| composed(t, Some(&mask)));
    }

    #[test]
    fn a_mask_of_the_wrong_size_is_refused_by_name() {
        let x = random(&[1, 2, 4, 5], 1);
        let mask = Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap();
        let err = softmax(&x, 1.0, Some(&mask)).unwrap_err().to_string();
        assert!(err.contains("softmax mask has 15 values, expected 4 x 5"), "{err}");
    }
}
