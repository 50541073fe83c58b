//! Rotary positions (halves convention); the backward pass is the opposite rotation.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::slice;

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
    use super::super::testing::{random, same_value_and_grads};
    use super::*;

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
    fn cos_and_sin_too_short_for_the_input_are_refused() {
        let (x, cos, sin) = (random(&[1, 1, 5, 8], 5), random(&[3, 4], 6), random(&[3, 4], 7));
        let err = rope(&x, &cos, &sin).unwrap_err().to_string();
        assert!(err.contains("rope: input [1, 1, 5, 8] does not fit cos/sin of 12 values"), "{err}");
    }
}
