//! Vision configs of Qwen2-VL (`Qwen2VLVisionConfig`) and Qwen2.5-VL (`Qwen2_5_VLVisionConfig`),
//! both read into one [`VitSpec`]. Beware the names: in Qwen2-VL `embed_dim` is the ViT width and
//! `hidden_size` the merger's output; in Qwen2.5-VL `hidden_size` is the width and
//! `out_hidden_size` the output.

use serde::Deserialize;

use crate::nn::Activation;

fn d_2() -> usize {
    2
}
fn d_3() -> usize {
    3
}
fn d_14() -> usize {
    14
}
fn d_quick_gelu() -> Activation {
    Activation::QuickGelu
}
fn d_silu() -> Activation {
    Activation::Silu
}

/// `rope_parameters` of the vision tower (5.x); 4.x configs omit it.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct VisionRope {
    pub rope_theta: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Qwen2VisionConfig {
    pub depth: usize,
    pub embed_dim: usize,
    pub hidden_size: usize,
    #[serde(default = "d_quick_gelu")]
    pub hidden_act: Activation,
    pub mlp_ratio: f64,
    pub num_heads: usize,
    #[serde(default = "d_3", alias = "in_chans")]
    pub in_channels: usize,
    #[serde(default = "d_14")]
    pub patch_size: usize,
    #[serde(default = "d_2")]
    pub spatial_merge_size: usize,
    #[serde(default = "d_2")]
    pub temporal_patch_size: usize,
    #[serde(default)]
    pub rope_parameters: VisionRope,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Qwen25VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub out_hidden_size: usize,
    #[serde(default = "d_silu")]
    pub hidden_act: Activation,
    pub num_heads: usize,
    #[serde(default = "d_3", alias = "in_chans")]
    pub in_channels: usize,
    #[serde(default = "d_14")]
    pub patch_size: usize,
    #[serde(default = "d_2")]
    pub spatial_merge_size: usize,
    #[serde(default = "d_2")]
    pub temporal_patch_size: usize,
    pub window_size: usize,
    #[serde(default)]
    pub fullatt_block_indexes: Vec<usize>,
    #[serde(default = "d_2")]
    pub tokens_per_second: usize,
    #[serde(default)]
    pub rope_parameters: VisionRope,
}

/// The two block designs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BlockKind {
    /// Qwen2-VL: LayerNorm, fc1 -> act -> fc2.
    LayerNormMlp,
    /// Qwen2.5-VL: RMSNorm, SwiGLU (gate_proj, up_proj, down_proj), all with bias.
    RmsNormSwiGlu,
}

/// Qwen2.5-VL's window attention: most blocks attend inside windows of `window_size` pixels.
#[derive(Debug, Clone)]
pub struct Windows {
    pub window_size: usize,
    pub full_attention_blocks: Vec<usize>,
}

/// Everything the vision transformer needs, whichever config it came from.
#[derive(Debug, Clone)]
pub struct VitSpec {
    pub depth: usize,
    pub width: usize,
    pub num_heads: usize,
    pub mlp_hidden: usize,
    pub act: Activation,
    pub block: BlockKind,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub out_dim: usize,
    pub rope_theta: f64,
    pub windows: Option<Windows>,
}

impl VitSpec {
    pub fn head_dim(&self) -> usize {
        self.width / self.num_heads
    }

    /// Length of one flattened patch: channels x temporal x patch x patch.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.num_heads == 0 || self.width % self.num_heads != 0 || self.head_dim() % 4 != 0 {
            return Err(format!(
                "vision_config: width {} must split into num_heads {} heads whose size is a multiple of 4",
                self.width, self.num_heads
            ));
        }
        if let Some(w) = &self.windows {
            if w.window_size < self.patch_size * self.merge_size {
                return Err(format!("vision_config: window_size {} is smaller than one merged patch", w.window_size));
            }
        }
        Ok(())
    }
}

impl From<&Qwen2VisionConfig> for VitSpec {
    fn from(c: &Qwen2VisionConfig) -> Self {
        Self {
            depth: c.depth,
            width: c.embed_dim,
            num_heads: c.num_heads,
            mlp_hidden: (c.embed_dim as f64 * c.mlp_ratio) as usize,
            act: c.hidden_act,
            block: BlockKind::LayerNormMlp,
            in_channels: c.in_channels,
            patch_size: c.patch_size,
            temporal_patch_size: c.temporal_patch_size,
            merge_size: c.spatial_merge_size,
            out_dim: c.hidden_size,
            rope_theta: c.rope_parameters.rope_theta.unwrap_or(10_000.0),
            windows: None,
        }
    }
}

impl From<&Qwen25VisionConfig> for VitSpec {
    fn from(c: &Qwen25VisionConfig) -> Self {
        Self {
            depth: c.depth,
            width: c.hidden_size,
            num_heads: c.num_heads,
            mlp_hidden: c.intermediate_size,
            act: c.hidden_act,
            block: BlockKind::RmsNormSwiGlu,
            in_channels: c.in_channels,
            patch_size: c.patch_size,
            temporal_patch_size: c.temporal_patch_size,
            merge_size: c.spatial_merge_size,
            out_dim: c.out_hidden_size,
            rope_theta: c.rope_parameters.rope_theta.unwrap_or(10_000.0),
            windows: Some(Windows {
                window_size: c.window_size,
                full_attention_blocks: c.fullatt_block_indexes.clone(),
            }),
        }
    }
}
