//! Training kernels with their own backward pass, for f32 tensors on the CPU: softmax (with the
//! attention's scale and additive mask folded in), layer/RMS norm, rotary positions, the
//! sigmoid-gated activations (SiLU, quick GELU) and a linear layer's bias. Candle's fused kernels have no backward pass,
//! and its composed formulas make a pass over memory, and an allocation, for every elementary
//! operation and again for each one's gradient; the attention scores, (heads, queries, keys)
//! per image or packed sequence, are the largest tensors a training step makes. Each kernel
//! here is one pass forward and one back, computing the same formula (values agree to float
//! rounding; each file's tests compare value and gradient with the composed formula).
//! Other devices and dtypes keep the composed formulas (`usable` says which applies).

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

mod bias;
mod gate;
mod norm;
mod rope;
mod softmax;

pub use bias::add_bias;
pub use gate::sigmoid_gate;
pub use norm::norm;
pub use rope::rope;
pub use softmax::softmax;

/// Whether `x` can take these kernels: an f32 tensor on the CPU.
pub fn usable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// The f32 slice a contiguous layout covers.
pub(super) fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: fused training kernel needs a contiguous input"),
    }
}

/// Shared by each kernel's tests: the fused op against the composed formula.
#[cfg(test)]
pub(super) mod testing {
    use candle_core::{Device, Tensor, Var};

    pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    pub fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.float(-2.0, 2.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The fused op and the composed formula give the same values and the same gradient for
    /// a loss that weights every output differently.
    pub fn same_value_and_grads(
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
}
