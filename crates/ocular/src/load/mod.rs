//! Reading a model folder: its files, its config in either transformers layout, its weights.

pub mod model_dir;
pub mod weights;

pub use model_dir::ModelDir;
pub use weights::{Progress, WeightIndex};

use std::str::FromStr;

/// Numeric type the weights are computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::F16 => candle_core::DType::F16,
            Self::Bf16 => candle_core::DType::BF16,
        }
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(format!("unknown dtype {s:?} (expected f32, f16 or bf16)")),
        }
    }
}

/// How to load a model.
#[derive(Clone)]
pub struct LoadOptions {
    pub precision: Precision,
    pub device: candle_core::Device,
    pub image_limits: crate::image::ImageLimits,
    /// Told (elements loaded, elements stored) as weights are read.
    pub progress: Option<Progress>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            precision: Precision::F32,
            device: candle_core::Device::Cpu,
            image_limits: Default::default(),
            progress: None,
        }
    }
}
