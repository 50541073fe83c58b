//! Qwen2-VL's native-resolution vision transformer (Wang et al. 2024), and Qwen2.5-VL's variant
//! with window attention, RMSNorm and SwiGLU (Bai et al. 2025). Follows transformers'
//! `Qwen2VisionTransformerPretrainedModel` and `Qwen2_5_VisionTransformerPretrainedModel`.
//! Patches arrive flattened in merge-block order; attention never crosses frames (nor, in window
//! blocks, windows); 2-D rotary positions carry the layout.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::qwen2_layout::{frame_segments, patch_positions, window_order};
use super::qwen2_vit_config::{BlockKind, VitSpec};
use crate::nn::{scaled_dot_product_attention, Activation, Linear, Norm};
use crate::text::rope::apply_rotary;

const NORM_EPS: f64 = 1e-6; // fixed in the reference, not configurable

enum Mlp {
    Plain { fc1: Linear, fc2: Linear, act: Activation },
    Gated { gate_proj: Linear, up_proj: Linear, down_proj: Linear, act: Activation },
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Plain { fc1, fc2, act } => fc2.forward(&act.apply(&fc1.forward(x)?)?),
            Self::Gated { gate_proj, up_proj, down_proj, act } => {
                down_proj.forward(&(act.apply(&gate_proj.forward(x)?)? * up_proj.forward(x)?)?)
            }
        }
    }
}

struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
}

impl Attention {
    /// x: (patches, width); attention only inside each [cu[i], cu[i+1]) segment.
    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, cu: &[usize]) -> Result<Tensor> {
        let (n, width) = x.dims2()?;
        let hd = width / self.num_heads;
        // (patches, 3 * width) -> (3, heads, patches, head_dim)
        let qkv = self.qkv.forward(x)?.reshape((n, 3, self.num_heads, hd))?.permute((1, 2, 0, 3))?;
        let dtype = x.dtype();
        // The reference rotates in f32 whatever the weights' dtype.
        let rotate = |t: Tensor| -> Result<Tensor> {
            apply_rotary(&t.unsqueeze(0)?.to_dtype(DType::F32)?, cos, sin)?.to_dtype(dtype)
        };
        let q = rotate(qkv.get(0)?)?;
        let k = rotate(qkv.get(1)?)?;
        let v = qkv.get(2)?.unsqueeze(0)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let parts = cu
            .windows(2)
            .map(|s| {
                let (a, len) = (s[0], s[1] - s[0]);
                scaled_dot_product_attention(
                    &q.narrow(2, a, len)?,
                    &k.narrow(2, a, len)?,
                    &v.narrow(2, a, len)?,
                    scale,
                    None,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let out = Tensor::cat(&parts, 2)?; // (1, heads, patches, head_dim)
                                           // -> (patches, heads * head_dim)
        self.proj.forward(&out.squeeze(0)?.transpose(0, 1)?.reshape((n, width))?)
    }
}

struct Block {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    mlp: Mlp,
}

impl Block {
    fn load(s: &VitSpec, vb: VarBuilder) -> Result<Self> {
        let (w, h) = (s.width, s.mlp_hidden);
        let norm = |name: &str| match s.block {
            BlockKind::LayerNormMlp => Norm::layer(w, NORM_EPS, vb.pp(name)),
            BlockKind::RmsNormSwiGlu => Norm::rms(w, NORM_EPS, vb.pp(name)),
        };
        let m = vb.pp("mlp");
        let mlp = match s.block {
            BlockKind::LayerNormMlp => Mlp::Plain {
                fc1: crate::nn::linear(w, h, m.pp("fc1"))?,
                fc2: crate::nn::linear(h, w, m.pp("fc2"))?,
                act: s.act,
            },
            BlockKind::RmsNormSwiGlu => Mlp::Gated {
                gate_proj: crate::nn::linear(w, h, m.pp("gate_proj"))?,
                up_proj: crate::nn::linear(w, h, m.pp("up_proj"))?,
                down_proj: crate::nn::linear(h, w, m.pp("down_proj"))?,
                act: s.act,
            },
        };
        let a = vb.pp("attn");
        Ok(Self {
            norm1: norm("norm1")?,
            attn: Attention {
                qkv: crate::nn::linear(w, 3 * w, a.pp("qkv"))?,
                proj: crate::nn::linear(w, w, a.pp("proj"))?,
                num_heads: s.num_heads,
            },
            norm2: norm("norm2")?,
            mlp,
        })
    }

    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, cu: &[usize]) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.norm1.forward(x)?, cos, sin, cu)?)?;
        &x + self.mlp.forward(&self.norm2.forward(&x)?)?
    }
}

/// The tower without its merger (which `connect::PatchMerger` provides).
pub struct Qwen2VisionTransformer {
    patch_embed: Linear,
    blocks: Vec<Block>,
    inv_freq: Vec<f32>,
    spec: VitSpec,
}

impl Qwen2VisionTransformer {
    /// `vb` points at `visual`.
    pub fn load(spec: &VitSpec, vb: VarBuilder) -> Result<Self> {
        let s = spec;
        // The Conv3d's kernel equals its stride, so it is a matmul over flattened patches.
        let w = vb
            .pp("patch_embed")
            .pp("proj")
            .get((s.width, s.in_channels, s.temporal_patch_size, s.patch_size, s.patch_size), "weight")?;
        let patch_embed = Linear::new(w.reshape((s.width, s.patch_dim()))?, None);
        let blocks = (0..s.depth).map(|i| Block::load(s, vb.pp(format!("blocks.{i}")))).collect::<Result<Vec<_>>>()?;
        // Axial rotary: a quarter of the head dim rotates with the row, a quarter with the column.
        let dim = s.head_dim() / 2;
        let inv_freq = (0..dim).step_by(2).map(|i| 1.0 / (s.rope_theta as f32).powf(i as f32 / dim as f32)).collect();
        Ok(Self { patch_embed, blocks, inv_freq, spec: spec.clone() })
    }

    /// cos and sin (patches, head_dim / 2): row angles then column angles for every patch.
    fn rotary(&self, positions: &[[usize; 2]], device: &Device) -> Result<(Tensor, Tensor)> {
        let angles: Vec<f32> = positions
            .iter()
            .flat_map(|&[h, w]| {
                self.inv_freq.iter().map(move |f| f * h as f32).chain(self.inv_freq.iter().map(move |f| f * w as f32))
            })
            .collect();
        let angles = Tensor::from_vec(angles, (positions.len(), 2 * self.inv_freq.len()), device)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// patches (n, patch_dim) of all media with their (t, h, w) grids -> (n, width), patches
    /// in their input order.
    pub fn forward(&self, patches: &Tensor, grids: &[[usize; 3]]) -> Result<Tensor> {
        let s = &self.spec;
        let unit = s.merge_size * s.merge_size;
        let mut x = self.patch_embed.forward(patches)?;
        let n = x.dim(0)?;
        let mut positions = patch_positions(grids, s.merge_size);
        if positions.len() != n {
            candle_core::bail!("{n} patches given but the grids describe {}", positions.len());
        }
        let frames = frame_segments(grids);
        let windows = s.windows.as_ref().map(|w| window_order(grids, s.merge_size, w.window_size, s.patch_size));
        // Window attention works on a sequence reordered window by window (in whole merge units).
        let patch_order = windows
            .as_ref()
            .map(|(units, _)| units.iter().flat_map(|&u| (u * unit)..(u * unit + unit)).collect::<Vec<_>>());
        if let Some(order) = &patch_order {
            x = x.index_select(&Tensor::new(order.iter().map(|&i| i as u32).collect::<Vec<_>>(), x.device())?, 0)?;
            positions = order.iter().map(|&i| positions[i]).collect();
        }
        let (cos, sin) = self.rotary(&positions, x.device())?;
        for (i, block) in self.blocks.iter().enumerate() {
            let cu = match (&windows, &s.windows) {
                (Some((_, cu_windows)), Some(w)) if !w.full_attention_blocks.contains(&i) => cu_windows,
                _ => &frames,
            };
            x = block.forward(&x, &cos, &sin, cu)?;
        }
        if let Some(order) = &patch_order {
            let mut inverse = vec![0u32; order.len()];
            for (new, &old) in order.iter().enumerate() {
                inverse[old] = new as u32;
            }
            x = x.index_select(&Tensor::new(inverse, x.device())?, 0)?;
        }
        Ok(x)
    }
}
