//! CLIP's vision transformer (Radford et al. 2021), as transformers' `CLIPVisionModel`:
//! patch embedding + class token + learned positions, pre-LN encoder layers.
//! VLMs read hidden states of an inner layer, so the forward returns those, not a pooled output.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, Embedding, Linear, VarBuilder};
use serde::Deserialize;

use crate::nn::{scaled_dot_product_attention, Activation, Norm};

fn d_hidden() -> usize {
    768
}
fn d_intermediate() -> usize {
    3072
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_channels() -> usize {
    3
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_act() -> Activation {
    Activation::QuickGelu
}
fn d_eps() -> f64 {
    1e-5
}

/// `CLIPVisionConfig` with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_image")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.patch_size == 0 || self.image_size % self.patch_size != 0 {
            return Err(format!(
                "vision_config: image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "vision_config: hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}

struct Embeddings {
    class_embedding: Tensor,
    patch_embedding: Conv2d,
    position_embedding: Embedding,
}

impl Embeddings {
    fn load(c: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let conv = Conv2dConfig { stride: c.patch_size, ..Default::default() };
        Ok(Self {
            class_embedding: vb.get(c.hidden_size, "class_embedding")?,
            patch_embedding: candle_nn::conv2d_no_bias(
                c.num_channels,
                c.hidden_size,
                c.patch_size,
                conv,
                vb.pp("patch_embedding"),
            )?,
            position_embedding: candle_nn::embedding(c.num_patches() + 1, c.hidden_size, vb.pp("position_embedding"))?,
        })
    }

    /// (images, channels, H, W) -> (images, 1 + patches, hidden)
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let patches = self.patch_embedding.forward(pixels)?; // (images, hidden, H/p, W/p)
        let patches = patches.flatten_from(2)?.transpose(1, 2)?; // (images, patches, hidden)
        let (n, _, hidden) = patches.dims3()?;
        let cls = self.class_embedding.reshape((1, 1, hidden))?.expand((n, 1, hidden))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?;
        x.broadcast_add(&self.position_embedding.embeddings().unsqueeze(0)?)
    }
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
}

impl Attention {
    fn load(c: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Self {
            q_proj: candle_nn::linear(h, h, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(h, h, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(h, h, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(h, h, vb.pp("out_proj"))?,
            num_heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, seq, hidden) = x.dims3()?;
        let head_dim = hidden / self.num_heads;
        // (batch, seq, hidden) -> (batch, heads, seq, head_dim)
        let heads = |t: Tensor| t.reshape((b, seq, self.num_heads, head_dim))?.transpose(1, 2);
        let q = heads(self.q_proj.forward(x)?)?;
        let k = heads(self.k_proj.forward(x)?)?;
        let v = heads(self.v_proj.forward(x)?)?;
        let out = scaled_dot_product_attention(&q, &k, &v, 1.0 / (head_dim as f64).sqrt(), None)?;
        // (batch, heads, seq, head_dim) -> (batch, seq, hidden)
        self.out_proj.forward(&out.transpose(1, 2)?.reshape((b, seq, hidden))?)
    }
}

struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: Norm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
    layer_norm2: Norm,
}

impl EncoderLayer {
    fn load(c: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        Ok(Self {
            self_attn: Attention::load(c, vb.pp("self_attn"))?,
            layer_norm1: Norm::layer(h, eps, vb.pp("layer_norm1"))?,
            fc1: candle_nn::linear(h, i, vb.pp("mlp").pp("fc1"))?,
            fc2: candle_nn::linear(i, h, vb.pp("mlp").pp("fc2"))?,
            act: c.hidden_act,
            layer_norm2: Norm::layer(h, eps, vb.pp("layer_norm2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.self_attn.forward(&self.layer_norm1.forward(x)?)?)?;
        let mlp = self.fc2.forward(&self.act.apply(&self.fc1.forward(&self.layer_norm2.forward(&x)?)?)?)?;
        &x + mlp
    }
}

/// The tower up to the deepest layer a VLM reads; deeper layers are never loaded.
pub struct ClipVisionTower {
    embeddings: Embeddings,
    pre_layrnorm: Norm,
    layers: Vec<EncoderLayer>,
}

impl ClipVisionTower {
    /// `vb` points at `vision_model`; `depth` is how many encoder layers to load.
    pub fn load(c: &ClipVisionConfig, depth: usize, vb: VarBuilder) -> Result<Self> {
        let layers = (0..depth)
            .map(|i| EncoderLayer::load(c, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: Embeddings::load(c, vb.pp("embeddings"))?,
            pre_layrnorm: Norm::layer(c.hidden_size, c.layer_norm_eps, vb.pp("pre_layrnorm"))?,
            layers,
        })
    }

    /// Hidden states as transformers numbers them (0 = embeddings after the pre-norm,
    /// i = output of layer i), for each index in `wanted`, in that order.
    /// pixels: (images, channels, H, W) -> each (images, 1 + patches, hidden)
    pub fn hidden_states(&self, pixels: &Tensor, wanted: &[usize]) -> Result<Vec<Tensor>> {
        let mut states = vec![self.pre_layrnorm.forward(&self.embeddings.forward(pixels)?)?];
        let deepest = wanted.iter().copied().max().unwrap_or(0);
        for layer in self.layers.iter().take(deepest) {
            let next = layer.forward(states.last().expect("states start non-empty"))?;
            states.push(next);
        }
        wanted
            .iter()
            .map(|&i| {
                states
                    .get(i)
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("hidden state {i} beyond the loaded layers")))
            })
            .collect()
    }

    pub fn hidden_size(&self) -> Result<usize> {
        self.pre_layrnorm.weight().dim(D::Minus1)
    }
}
