//! Adding a bias along the last dimension. Composed, candle broadcasts the bias to the
//! output's full size and, backward, accumulates a gradient of that size and sums it down a
//! strided column at a time; here the bias's gradient is one pass of row sums.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::slice;

pub fn add_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&bias.contiguous()?, AddBias)
}

struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "ocular-add-bias"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (slice(s1, l1, "bias input")?, slice(s2, l2, "bias")?);
        if b.is_empty() || l1.shape().dims().last() != Some(&b.len()) {
            candle_core::bail!("bias of {} values for an input of shape {:?}", b.len(), l1.shape());
        }
        let mut out = x.to_vec();
        for row in out.chunks_exact_mut(b.len()) {
            for (v, &c) in row.iter_mut().zip(b) {
                *v += c;
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let db = grad.apply_op1_no_bwd(&RowSum(bias.elem_count()))?;
        Ok((Some(grad), Some(db)))
    }
}

/// The sum of the rows of a contiguous tensor whose last dimension is `.0` wide.
struct RowSum(usize);

impl CustomOp1 for RowSum {
    fn name(&self) -> &'static str {
        "ocular-row-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = slice(s, l, "bias grad")?;
        let mut out = vec![0f32; self.0];
        for row in g.chunks_exact(self.0) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(self.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{random, same_value_and_grads};
    use super::*;

    #[test]
    fn adding_a_bias_matches_broadcast_add_in_value_and_both_gradients() {
        let (x, b) = (random(&[2, 3, 6], 10), random(&[6], 11));
        same_value_and_grads(&[x, b], |t| add_bias(&t[0], &t[1]).unwrap(), |t| t[0].broadcast_add(&t[1]).unwrap());
    }

    #[test]
    fn a_bias_that_does_not_fit_the_input_is_refused_by_size() {
        let err = add_bias(&random(&[2, 6], 10), &random(&[4], 11)).unwrap_err().to_string();
        assert!(err.contains("bias of 4 values for an input of shape [2, 6]"), "{err}");
    }
}
