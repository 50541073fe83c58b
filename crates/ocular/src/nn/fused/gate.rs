//! `x * sigmoid(a x)`: SiLU (a = 1) and CLIP's quick GELU (a = 1.702). Composed, it is three
//! operations forward and seven back, each over the MLP's widest activations.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::slice;

pub fn sigmoid_gate(x: &Tensor, a: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Gate { a })
}

struct Gate {
    a: f32,
}

/// The same formulas as candle's: `silu` is `x / (1 + exp(-x))`, `sigmoid` `1 / (1 + exp(-x))`.
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

impl CustomOp1 for Gate {
    fn name(&self) -> &'static str {
        "ocular-sigmoid-gate"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "activation input")?;
        let out: Vec<f32> = if self.a == 1.0 {
            x.iter().map(|&v| v / (1.0 + (-v).exp())).collect()
        } else {
            x.iter().map(|&v| v * sigmoid(v * self.a)).collect()
        };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &GateGrad { a: self.a })?))
    }
}

struct GateGrad {
    a: f32,
}

impl CustomOp2 for GateGrad {
    fn name(&self) -> &'static str {
        "ocular-sigmoid-gate-grad"
    }

    /// d/dx x s(ax) = s + a x s (1 - s).
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1, "activation grad")?, slice(s2, l2, "activation grad")?);
        let out = x
            .iter()
            .zip(g)
            .map(|(&v, &g)| {
                let s = sigmoid(self.a * v);
                g * (s + self.a * v * s * (1.0 - s))
            })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{random, same_value_and_grads};
    use super::*;

    #[test]
    fn silu_and_quick_gelu_match_the_composed_formulas() {
        let x = random(&[3, 7], 8);
        same_value_and_grads(&[x.clone()], |t| sigmoid_gate(&t[0], 1.0).unwrap(), |t| t[0].silu().unwrap());
        same_value_and_grads(
            &[x],
            |t| sigmoid_gate(&t[0], 1.702).unwrap(),
            |t| (&t[0] * candle_nn::ops::sigmoid(&(&t[0] * 1.702).unwrap()).unwrap()).unwrap(),
        );
    }
}
