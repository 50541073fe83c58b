//! Rotary position embedding (RoFormer), with the frequency scalings of transformers'
//! `modeling_rope_utils.py`. Reads both config layouts: 4.x `rope_theta` + `rope_scaling`
//! and 5.x `rope_parameters`.

use candle_core::{DType, Device, Result, Tensor};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RopeType {
    #[default]
    Default,
    Linear,
    Llama3,
    /// Qwen2-VL's multimodal RoPE: default frequencies, sections over (t, h, w) positions.
    Mrope,
    Dynamic,
    Yarn,
    Longrope,
}

/// One entry of `rope_scaling` (4.x) or `rope_parameters` (5.x).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RopeParameters {
    #[serde(alias = "type", default)]
    pub rope_type: RopeType,
    pub rope_theta: Option<f64>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
    pub mrope_section: Option<Vec<usize>>,
}

impl RopeParameters {
    /// Resolve the two layouts: `rope_parameters` wins; else `rope_scaling` with `rope_theta` beside it.
    pub fn resolve(
        rope_parameters: Option<&RopeParameters>,
        rope_scaling: Option<&RopeParameters>,
        rope_theta: Option<f64>,
        default_theta: f64,
    ) -> RopeParameters {
        let mut p = rope_parameters.or(rope_scaling).cloned().unwrap_or_default();
        p.rope_theta = p.rope_theta.or(rope_theta).or(Some(default_theta));
        p
    }

    pub fn theta(&self) -> f64 {
        self.rope_theta.unwrap_or(10_000.0)
    }
}

/// Inverse frequencies for `head_dim`, computed in f32 as transformers does.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f32>,
}

impl RotaryEmbedding {
    pub fn new(params: &RopeParameters, head_dim: usize) -> std::result::Result<Self, String> {
        let base = params.theta() as f32;
        let mut inv_freq: Vec<f32> =
            (0..head_dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / head_dim as f32)).collect();
        let factor = params.factor.unwrap_or(1.0) as f32;
        match params.rope_type {
            RopeType::Default | RopeType::Mrope => {}
            RopeType::Linear => inv_freq.iter_mut().for_each(|f| *f /= factor),
            RopeType::Llama3 => llama3_scaling(&mut inv_freq, params, factor)?,
            other => {
                return Err(format!(
                    "rope type {other:?} is not supported yet (supported: default, linear, llama3, mrope)"
                ))
            }
        }
        Ok(Self { inv_freq })
    }

    pub fn half_dim(&self) -> usize {
        self.inv_freq.len()
    }

    /// cos and sin, each (positions.len(), head_dim / 2), for the given absolute positions.
    pub fn cos_sin(&self, positions: &[i64], dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let angles: Vec<f32> =
            positions.iter().flat_map(|&p| self.inv_freq.iter().map(move |f| f * p as f32)).collect();
        let angles = Tensor::from_vec(angles, (positions.len(), self.inv_freq.len()), device)?;
        Ok((angles.cos()?.to_dtype(dtype)?, angles.sin()?.to_dtype(dtype)?))
    }
}

impl RotaryEmbedding {
    /// Multimodal RoPE (Qwen2-VL): the frequency pairs are split into sections that rotate by
    /// the temporal, height and width position respectively. `positions[i]` is (t, h, w) of token
    /// i; `sections` (`mrope_section`) sums to head_dim / 2. Returns cos and sin (seq, head_dim / 2).
    pub fn cos_sin_mrope(
        &self,
        positions: &[[i64; 3]],
        sections: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let axis_of: Vec<usize> =
            sections.iter().enumerate().flat_map(|(i, &n)| std::iter::repeat_n(i % 3, n)).collect();
        if axis_of.len() != self.inv_freq.len() {
            candle_core::bail!(
                "mrope_section {sections:?} sums to {}, expected head_dim / 2 = {}",
                axis_of.len(),
                self.inv_freq.len()
            );
        }
        let angles: Vec<f32> = positions
            .iter()
            .flat_map(|p| self.inv_freq.iter().zip(&axis_of).map(move |(f, &a)| f * p[a] as f32))
            .collect();
        let angles = Tensor::from_vec(angles, (positions.len(), self.inv_freq.len()), device)?;
        Ok((angles.cos()?.to_dtype(dtype)?, angles.sin()?.to_dtype(dtype)?))
    }
}

/// Llama 3.1's smooth frequency scaling: long wavelengths are divided by `factor`,
/// short ones kept, those between interpolated.
fn llama3_scaling(inv_freq: &mut [f32], p: &RopeParameters, factor: f32) -> std::result::Result<(), String> {
    let need = |v: Option<f64>, name: &str| v.ok_or(format!("llama3 rope scaling needs `{name}`"));
    let low = need(p.low_freq_factor, "low_freq_factor")? as f32;
    let high = need(p.high_freq_factor, "high_freq_factor")? as f32;
    let old_len = p
        .original_max_position_embeddings
        .ok_or("llama3 rope scaling needs `original_max_position_embeddings`")? as f32;
    let low_wavelen = old_len / low;
    let high_wavelen = old_len / high;
    for f in inv_freq.iter_mut() {
        let wavelen = 2.0 * std::f32::consts::PI / *f;
        let scaled = if wavelen > low_wavelen { *f / factor } else { *f };
        let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        *f = if medium {
            let smooth = (old_len / wavelen - low) / (high - low);
            (1.0 - smooth) * scaled / factor + smooth * scaled
        } else {
            scaled
        };
    }
    Ok(())
}

/// Rotate `x` (batch, heads, seq, head_dim) by cos/sin (seq, head_dim / 2), halves convention
/// (`rotate_half`), as Llama, CLIP-free text models and Qwen2 use.
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    // Candle's fused kernel has no backward pass; training takes ours on the CPU in f32 (cos
    // and sin constant, as positions always are), else the composed formula.
    if x.track_op() {
        if crate::nn::fused::usable(x) && !cos.track_op() && !sin.track_op() {
            return crate::nn::fused::rope(x, cos, sin);
        }
        return candle_nn::rotary_emb::rope_slow(x, cos, sin);
    }
    candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_config_layouts_resolve_to_the_same_parameters() {
        let v5: RopeParameters =
            serde_json::from_str(r#"{"rope_type":"linear","factor":2.0,"rope_theta":500.0}"#).unwrap();
        let v4: RopeParameters = serde_json::from_str(r#"{"type":"linear","factor":2.0}"#).unwrap();
        let a = RopeParameters::resolve(Some(&v5), None, None, 10_000.0);
        let b = RopeParameters::resolve(None, Some(&v4), Some(500.0), 10_000.0);
        assert_eq!((a.rope_type, a.theta(), a.factor), (b.rope_type, b.theta(), b.factor));
        let c = RopeParameters::resolve(None, None, None, 10_000.0);
        assert_eq!((c.rope_type, c.theta()), (RopeType::Default, 10_000.0));
    }

    #[test]
    fn linear_scaling_divides_frequencies() {
        let base = RopeParameters { rope_theta: Some(10_000.0), ..Default::default() };
        let linear = RopeParameters { rope_type: RopeType::Linear, factor: Some(4.0), ..base.clone() };
        let a = RotaryEmbedding::new(&base, 8).unwrap();
        let b = RotaryEmbedding::new(&linear, 8).unwrap();
        assert_eq!(a.inv_freq[0], 1.0);
        for (x, y) in a.inv_freq.iter().zip(&b.inv_freq) {
            assert!((x / 4.0 - y).abs() < 1e-9);
        }
    }

    #[test]
    fn rotation_at_position_zero_is_identity_and_preserves_norm() {
        let dev = Device::Cpu;
        let rope = RotaryEmbedding::new(&RopeParameters::default(), 4).unwrap();
        let x = Tensor::new(&[1.0f32, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0], &dev).unwrap().reshape((1, 1, 2, 4)).unwrap();
        let (cos, sin) = rope.cos_sin(&[0, 7], DType::F32, &dev).unwrap();
        let y = apply_rotary(&x, &cos, &sin).unwrap().squeeze(0).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(y[0][0], vec![1.0, 2.0, 3.0, 4.0]);
        let norm: f32 = y[0][1].iter().map(|v| v * v).sum();
        assert!((norm - 30.0).abs() < 1e-4);
        // Halves convention: dims 0 and 2 rotate together at frequency 1.
        let (c, s) = (7f32.cos(), 7f32.sin());
        assert!((y[0][1][0] - (1.0 * c - 3.0 * s)).abs() < 1e-5);
    }
}
