//! LayerNorm or RMSNorm, chosen by the family (Qwen2-VL's vision blocks use the first,
//! Qwen2.5-VL's the second, with the same weight names).

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, RmsNorm, VarBuilder};

pub enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    pub fn layer(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self::Layer(candle_nn::layer_norm(size, eps, vb)?))
    }

    pub fn rms(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self::Rms(candle_nn::rms_norm(size, eps, vb)?))
    }
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Layer(n) => n.forward(xs),
            Self::Rms(n) => n.forward(xs),
        }
    }
}
