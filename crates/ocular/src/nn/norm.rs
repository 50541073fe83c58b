//! LayerNorm and RMSNorm. Inference takes candle's fused kernels; when the input tracks
//! gradients (training), our fused kernel with its backward pass on the CPU in f32
//! (`nn::fused`), else the composed formula; all three give the same values.
//! Qwen2-VL's vision blocks use LayerNorm, Qwen2.5-VL's RMSNorm, under the same weight names.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

pub struct Norm {
    weight: Tensor,
    /// LayerNorm's shift; RMSNorm has none and does not remove the mean.
    bias: Option<Tensor>,
    eps: f64,
}

impl Norm {
    pub fn layer(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get(size, "weight")?, bias: Some(vb.get(size, "bias")?), eps })
    }

    pub fn rms(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get(size, "weight")?, bias: None, eps })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let eps = self.eps as f32;
        if xs.is_contiguous() && !xs.track_op() {
            return match &self.bias {
                Some(b) => candle_nn::ops::layer_norm(xs, &self.weight, b, eps),
                None => candle_nn::ops::rms_norm(xs, &self.weight, eps),
            };
        }
        if super::fused::usable(xs) {
            return super::fused::norm(xs, &self.weight, self.bias.as_ref(), eps);
        }
        let dtype = xs.dtype();
        let x = xs.to_dtype(DType::F32)?;
        let x = if self.bias.is_some() { x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)? } else { x };
        let normed = x.broadcast_div(&(x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?)?;
        let out = normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?;
        match &self.bias {
            Some(b) => out.broadcast_add(b),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_and_composed_agree_and_the_composed_one_trains() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1.0f32, -2.0, 3.5, 0.25], [0.0, 4.0, -1.0, 2.0]], &dev).unwrap();
        let weight = Tensor::new(&[1.0f32, 0.5, -1.0, 2.0], &dev).unwrap();
        let bias = Tensor::new(&[0.1f32, 0.0, -0.2, 0.3], &dev).unwrap();
        for norm in [
            Norm { weight: weight.clone(), bias: Some(bias.clone()), eps: 1e-5 },
            Norm { weight: weight.clone(), bias: None, eps: 1e-6 },
        ] {
            let fused = norm.forward(&x).unwrap();
            let var = Var::from_tensor(&x).unwrap();
            let composed = norm.forward(var.as_tensor()).unwrap();
            let d = (fused - &composed).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-5, "{d}");
            let grads = composed.sum_all().unwrap().backward().unwrap();
            assert!(grads.get(var.as_tensor()).is_some());
        }
    }
}
