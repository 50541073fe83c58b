//! Training kernels with their own backward pass, for f32 tensors on the CPU: softmax (with the
//! attention's scale and additive mask folded in), layer/RMS norm and rotary positions. Candle's fused kernels
//! have no backward pass and its composed formulas make a pass over memory, and an allocation,
//! for every elementary operation and again for each one's gradient; the attention scores,
//! (heads, queries, keys) per image or packed sequence, are the largest tensors a training step
//! makes, so that is where the time went. Each kernel here is one pass forward and one back,
//! computing the same formula in the same order (values agree to float rounding; tests below).
//! Other devices and dtypes keep the composed formulas (`usable` says which applies).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// Whether `x` can take these kernels: an f32 tensor on the CPU.
pub fn usable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// The f32 slice a contiguous layout covers.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: fused training kernel needs a contiguous input"),
    }
}

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

/// Rotary positions, halves convention: with x = [x1, x2] along the last dimension,
/// `[x1 cos - x2 sin, x2 cos + x1 sin]`; `x` is (batch, heads, seq, head_dim), `cos` and `sin`
/// (at least seq, head_dim / 2) and constant (they take no gradient).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope { inverse: false })
}

/// `inverse` turns the other way: the backward pass of a rotation is the opposite rotation.
struct Rope {
    inverse: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "ocular-rope"
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
        let (x, cos, sin) = (slice(s1, l1, "rope input")?, slice(s2, l2, "rope cos")?, slice(s3, l3, "rope sin")?);
        let (_, _, seq, d) = l1.shape().dims4()?;
        let half = d / 2;
        if d % 2 != 0 || cos.len() < seq * half || sin.len() != cos.len() {
            candle_core::bail!("rope: input {:?} does not fit cos/sin of {} values", l1.shape(), cos.len());
        }
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut out = vec![0f32; x.len()];
        for (r, (xs, ys)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
            let at = (r % seq) * half;
            let (c, s) = (&cos[at..at + half], &sin[at..at + half]);
            for j in 0..half {
                let (a, b, sj) = (xs[j], xs[j + half], sign * s[j]);
                ys[j] = a * c[j] - b * sj;
                ys[j + half] = b * c[j] + a * sj;
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = grad.contiguous()?.apply_op3_no_bwd(cos, sin, &Rope { inverse: !self.inverse })?;
        Ok((Some(dx), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.float(-2.0, 2.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The fused op and the composed formula give the same values and the same gradient for
    /// a loss that weights every output differently.
    fn same_value_and_grads(
        inputs: &[Tensor],
        fused: impl Fn(&[Tensor]) -> Tensor,
        composed: impl Fn(&[Tensor]) -> Tensor,
    ) {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (fused(&ts), composed(&ts));
        assert!(max_diff(&a, &b) < 1e-5, "values differ by {}", max_diff(&a, &b));
        let weights = random(a.dims(), 99);
        let ga = (&a * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        for t in &ts {
            let (x, y) = (ga.get(t).unwrap(), gb.get(t).unwrap());
            assert!(max_diff(x, y) < 1e-4, "gradients differ by {}", max_diff(x, y));
        }
    }

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
    fn rope_matches_the_composed_formula_in_value_and_gradient() {
        let (x, cos, sin) = (random(&[2, 3, 5, 8], 5), random(&[5, 4], 6), random(&[5, 4], 7));
        same_value_and_grads(
            &[x],
            |t| rope(&t[0], &cos, &sin).unwrap(),
            |t| candle_nn::rotary_emb::rope_slow(&t[0], &cos, &sin).unwrap(),
        );
    }

    #[test]
    fn a_mask_of_the_wrong_size_is_refused_by_name() {
        let x = random(&[1, 2, 4, 5], 1);
        let mask = Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap();
        let err = softmax(&x, 1.0, Some(&mask)).unwrap_err().to_string();
        assert!(err.contains("softmax mask has 15 values, expected 4 x 5"), "{err}");
    }
}
