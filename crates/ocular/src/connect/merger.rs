//! Qwen2-VL's patch merger: each 2x2 block of neighbouring patch features is concatenated and
//! mapped by an MLP to one language-model token, so an image costs a quarter of its patches.
//! Follows transformers' `PatchMerger` (LayerNorm; RMSNorm in Qwen2.5-VL), `ln_q`, `mlp.0`, `mlp.2`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::Linear;

use crate::nn::Norm;

pub struct PatchMerger {
    ln_q: Norm,
    mlp_0: Linear,
    mlp_2: Linear,
    unit: usize,
}

impl PatchMerger {
    /// `rms`: Qwen2.5-VL's RMSNorm instead of LayerNorm. `unit` = merge_size squared.
    pub fn load(width: usize, out_dim: usize, unit: usize, rms: bool, vb: VarBuilder) -> Result<Self> {
        let eps = 1e-6; // fixed in the reference
        let ln_q = if rms { Norm::rms(width, eps, vb.pp("ln_q"))? } else { Norm::layer(width, eps, vb.pp("ln_q"))? };
        let hidden = width * unit;
        Ok(Self {
            ln_q,
            mlp_0: crate::nn::linear(hidden, hidden, vb.pp("mlp.0"))?,
            mlp_2: crate::nn::linear(hidden, out_dim, vb.pp("mlp.2"))?,
            unit,
        })
    }
}

impl Module for PatchMerger {
    /// (patches, width) in merge-block order -> (patches / unit, out_dim)
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, width) = x.dims2()?;
        let x = self.ln_q.forward(x)?.reshape((n / self.unit, width * self.unit))?;
        self.mlp_2.forward(&self.mlp_0.forward(&x)?.gelu_erf()?)
    }
}
