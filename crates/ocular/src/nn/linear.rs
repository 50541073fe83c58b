//! A linear layer under transformers' weight names (`weight` (out, in), optional `bias`).
//! candle's own `Linear` computes it; training on the CPU adds the bias with our kernel, whose
//! backward pass is a row sum rather than a broadcast gradient summed down strided columns.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Debug)]
pub struct Linear {
    matmul: candle_nn::Linear,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { matmul: candle_nn::Linear::new(weight, None), bias }
    }

    pub fn weight(&self) -> &Tensor {
        self.matmul.weight()
    }
}

/// `in_dim` -> `out_dim` with a bias when `bias`.
pub fn linear_b(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Ok(Linear::new(weight, bias))
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, true, vb)
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.matmul.forward(x)?;
        match &self.bias {
            None => Ok(y),
            Some(b) if y.track_op() && super::fused::usable(&y) => super::fused::add_bias(&y, b),
            Some(b) => y.broadcast_add(b),
        }
    }
}
