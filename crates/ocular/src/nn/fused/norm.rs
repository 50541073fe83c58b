//! Layer norm and RMS norm over the last dimension, with the weight's and bias's gradients
//! computed in the same pass as the input's.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::slice;

/// Layer norm over the last dimension (`bias` given) or RMS norm (`bias` None, no mean removed):
/// `(x - mean) / sqrt(var + eps) * weight + bias`.
pub fn norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let x = x.contiguous()?;
    match bias {
        Some(b) => x.apply_op3(weight, b, Norm { eps, centred: true }),
        None => x.apply_op2(weight, Norm { eps, centred: false }),
    }
}

#[derive(Clone, Copy)]
struct Norm {
    eps: f32,
    centred: bool,
}

impl Norm {
    /// Each row's mean (0 for RMS norm) and reciprocal standard deviation.
    fn stats(&self, xs: &[f32]) -> (f32, f32) {
        let n = xs.len() as f32;
        let mean = if self.centred { xs.iter().sum::<f32>() / n } else { 0.0 };
        let var = xs.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }

    fn run(&self, x: &[f32], shape: &Shape, w: &[f32], b: Option<&[f32]>) -> Result<(CpuStorage, Shape)> {
        let cols = w.len();
        if cols == 0 || shape.dims().last() != Some(&cols) {
            candle_core::bail!("norm weight has {cols} values, input is {shape:?}");
        }
        let mut out = vec![0f32; x.len()];
        for (xs, ys) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            let (mean, rstd) = self.stats(xs);
            for (j, (y, &v)) in ys.iter_mut().zip(xs).enumerate() {
                *y = (v - mean) * rstd * w[j] + b.map_or(0.0, |b| b[j]);
            }
        }
        Ok((CpuStorage::F32(out), shape.clone()))
    }

    /// Gradients of x, weight and bias, packed as rows: x's rows, then weight's, then bias's.
    fn grads(&self, x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (x, grad) = (x.contiguous()?, grad.contiguous()?);
        let cols = w.dim(0)?;
        let rows = x.elem_count() / cols;
        let packed = x.apply_op3_no_bwd(&w.contiguous()?, &grad, &NormGrad(*self))?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        Ok((dx, packed.get(rows)?, packed.get(rows + 1)?))
    }
}

impl CustomOp2 for Norm {
    fn name(&self) -> &'static str {
        "ocular-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(slice(s1, l1, "norm input")?, l1.shape(), slice(s2, l2, "norm weight")?, None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for Norm {
    fn name(&self) -> &'static str {
        "ocular-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let b = slice(s3, l3, "norm bias")?;
        self.run(slice(s1, l1, "norm input")?, l1.shape(), slice(s2, l2, "norm weight")?, Some(b))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, grad)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

struct NormGrad(Norm);

impl CustomOp3 for NormGrad {
    fn name(&self) -> &'static str {
        "ocular-norm-grad"
    }

    /// With h = (x - mean) * rstd and d = g * weight: dx = rstd * (d - mean(d) - h * mean(d * h))
    /// (no mean(d) term for RMS norm), dweight = sum over rows of g * h, dbias = sum of g.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (slice(s1, l1, "norm grad")?, slice(s2, l2, "norm grad")?, slice(s3, l3, "norm grad")?);
        let cols = w.len();
        let rows = x.len() / cols;
        let mut out = vec![0f32; (rows + 2) * cols];
        let (dx, dwb) = out.split_at_mut(rows * cols);
        let (dw, db) = dwb.split_at_mut(cols);
        let mut d = vec![0f32; cols];
        for ((xs, gs), dxs) in x.chunks_exact(cols).zip(g.chunks_exact(cols)).zip(dx.chunks_exact_mut(cols)) {
            let (mean, rstd) = self.0.stats(xs);
            let (mut d_mean, mut dh_mean) = (0f32, 0f32);
            for j in 0..cols {
                let h = (xs[j] - mean) * rstd;
                d[j] = gs[j] * w[j];
                d_mean += d[j];
                dh_mean += d[j] * h;
                dw[j] += gs[j] * h;
                db[j] += gs[j];
            }
            let n = cols as f32;
            let d_mean = if self.0.centred { d_mean / n } else { 0.0 };
            let dh_mean = dh_mean / n;
            for j in 0..cols {
                let h = (xs[j] - mean) * rstd;
                dxs[j] = rstd * (d[j] - d_mean - h * dh_mean);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, cols))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{random, same_value_and_grads};
    use super::*;
    use candle_core::D;

    #[test]
    fn norms_match_the_composed_formula_in_value_and_every_gradient() {
        let (x, w, b) = (random(&[3, 4, 8], 2), random(&[8], 3), random(&[8], 4));
        let composed = |t: &[Tensor], centred: bool| {
            let x = &t[0];
            let x = if centred { x.broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap()).unwrap() } else { x.clone() };
            let rstd = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-5).unwrap().sqrt().unwrap();
            let y = x.broadcast_div(&rstd).unwrap().broadcast_mul(&t[1]).unwrap();
            if centred {
                y.broadcast_add(&t[2]).unwrap()
            } else {
                y
            }
        };
        same_value_and_grads(
            &[x.clone(), w.clone(), b],
            |t| norm(&t[0], &t[1], Some(&t[2]), 1e-5).unwrap(),
            |t| composed(t, true),
        );
        same_value_and_grads(&[x, w], |t| norm(&t[0], &t[1], None, 1e-5).unwrap(), |t| composed(t, false));
    }

    #[test]
    fn a_weight_that_does_not_fit_the_input_is_refused_by_size() {
        let (x, w) = (random(&[2, 8], 2), random(&[6], 3));
        let err = norm(&x, &w, None, 1e-5).unwrap_err().to_string();
        assert!(err.contains("norm weight has 6 values, input is [2, 8]"), "{err}");
    }
}
