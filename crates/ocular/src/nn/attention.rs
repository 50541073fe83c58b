//! Scaled dot-product attention as transformers' eager path computes it:
//! softmax(q k^T * scale + mask) v, with the softmax in f32 whatever the weights' dtype.

use candle_core::{DType, Device, Result, Tensor};

/// `q`: (batch, heads, q_len, head_dim); `k`, `v`: (batch, heads, kv_len, head_dim).
/// `mask` is added to the scores and broadcasts to (batch, heads, q_len, kv_len).
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let probs = attention_weights(q, k, scale, mask)?.to_dtype(q.dtype())?;
    // (batch, heads, q_len, head_dim)
    probs.matmul(&v.contiguous()?)
}

/// The attention weights softmax(q k^T * scale + mask), (batch, heads, q_len, kv_len), in f32.
pub fn attention_weights(q: &Tensor, k: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let scores = q.contiguous()?.matmul(&k.t()?.contiguous()?)?;
    if scores.track_op() && super::fused::usable(&scores) && mask.is_none_or(|m| m.rank() == 2) {
        // One pass forward and back over the scores, the largest tensor of a training step.
        return super::fused::softmax(&scores, scale as f32, mask);
    }
    let mut scores = (scores * scale)?.to_dtype(DType::F32)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    // Candle's fused softmax has no backward pass; training elsewhere takes the composed one.
    if scores.track_op() {
        candle_nn::ops::softmax(&scores, candle_core::D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&scores)
    }
}

/// Additive causal mask (q_len, offset + q_len) for queries at positions offset.. over all keys so far.
pub fn causal_mask(q_len: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let kv_len = offset + q_len;
    let mask: Vec<f32> = (0..q_len)
        .flat_map(|i| (0..kv_len).map(move |j| if j > offset + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (q_len, kv_len), device)
}

/// Grouped-query attention: each key/value head serves `n_rep` query heads.
/// (batch, kv_heads, seq, head_dim) -> (batch, kv_heads * n_rep, seq, head_dim)
pub fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv_heads, seq, hd) = x.dims4()?;
    x.unsqueeze(2)?.expand((b, kv_heads, n_rep, seq, hd))?.reshape((b, kv_heads * n_rep, seq, hd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_hides_the_future_only() {
        let m = causal_mask(2, 1, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m[0], vec![0.0, 0.0, f32::NEG_INFINITY]);
        assert_eq!(m[1], vec![0.0, 0.0, 0.0]);
    }

    #[test]
    fn repeat_kv_repeats_each_head_in_place() {
        let x = Tensor::arange(0f32, 4.0, &Device::Cpu).unwrap().reshape((1, 2, 2, 1)).unwrap();
        let r = repeat_kv(&x, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(r, vec![0.0, 1.0, 0.0, 1.0, 2.0, 3.0, 2.0, 3.0]);
    }

    #[test]
    fn attention_with_one_key_returns_its_value() {
        let dev = Device::Cpu;
        let q = Tensor::ones((1, 1, 3, 2), DType::F32, &dev).unwrap();
        let k = Tensor::ones((1, 1, 1, 2), DType::F32, &dev).unwrap();
        let v = Tensor::new(&[[[[5.0f32, -1.0]]]], &dev).unwrap();
        let out = scaled_dot_product_attention(&q, &k, &v, 0.5, None).unwrap();
        assert_eq!(out.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![5.0, -1.0, 5.0, -1.0, 5.0, -1.0]);
    }
}
