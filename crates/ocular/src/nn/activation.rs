//! Activation functions by their Hugging Face names (`hidden_act`, `projector_hidden_act`),
//! following transformers' `activations.py` (ACT2FN).

use candle_core::{Result, Tensor};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU, with erf.
    Gelu,
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    #[serde(alias = "gelu_new", alias = "gelu_fast")]
    GeluPytorchTanh,
    /// CLIP's `x * sigmoid(1.702 x)`.
    QuickGelu,
    #[serde(alias = "swish")]
    Silu,
    Relu,
}

impl Activation {
    pub fn apply(self, xs: &Tensor) -> Result<Tensor> {
        // Training on the CPU takes the fused kernel with its backward pass (same values).
        if xs.track_op() && super::fused::usable(xs) {
            match self {
                Self::QuickGelu => return super::fused::sigmoid_gate(xs, 1.702),
                Self::Silu => return super::fused::sigmoid_gate(xs, 1.0),
                _ => {}
            }
        }
        match self {
            Self::Gelu => xs.gelu_erf(),
            Self::GeluPytorchTanh => xs.gelu(),
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Silu => xs.silu(),
            Self::Relu => xs.relu(),
        }
    }
}

impl candle_core::Module for Activation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.apply(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn names_and_values_follow_transformers() {
        let act: Activation = serde_json::from_str("\"quick_gelu\"").unwrap();
        assert_eq!(act, Activation::QuickGelu);
        let act: Activation = serde_json::from_str("\"gelu_pytorch_tanh\"").unwrap();
        assert_eq!(act, Activation::GeluPytorchTanh);
        let x = Tensor::new(&[-1.0f32, 0.5, 2.0], &Device::Cpu).unwrap();
        let quick = Activation::QuickGelu.apply(&x).unwrap().to_vec1::<f32>().unwrap();
        let expected: Vec<f32> = [-1.0f32, 0.5, 2.0].iter().map(|v| v / (1.0 + (-1.702 * v).exp())).collect();
        for (a, b) in quick.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // gelu(1) with erf is 0.8413447.
        let one = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        let g = Activation::Gelu.apply(&one).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((g - 0.841_344_7).abs() < 1e-6);
    }
}
