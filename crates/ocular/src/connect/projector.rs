//! LLaVA's connector: image features become vectors in the language model's embedding space
//! (Liu et al. 2023). LLaVA 1.0 uses one linear map; LLaVA 1.5 a two-layer MLP
//! (`LlavaMultiModalProjector` in transformers: linear_1, act, linear_2).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::Deserialize;

use crate::nn::Activation;

/// Which projector a checkpoint carries (`mm_projector_type` in original LLaVA configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum ProjectorKind {
    #[serde(rename = "linear")]
    Linear,
    #[default]
    #[serde(rename = "mlp2x_gelu")]
    Mlp2xGelu,
}

pub struct Projector {
    linear_1: Linear,
    /// The MLP's activation and second layer; absent for LLaVA 1.0.
    mlp_tail: Option<(Activation, Linear)>,
}

impl Projector {
    pub fn load(
        kind: ProjectorKind,
        in_dim: usize,
        out_dim: usize,
        act: Activation,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let linear_1 = candle_nn::linear_b(in_dim, out_dim, bias, vb.pp("linear_1"))?;
        let mlp_tail = match kind {
            ProjectorKind::Linear => None,
            ProjectorKind::Mlp2xGelu => Some((act, candle_nn::linear_b(out_dim, out_dim, bias, vb.pp("linear_2"))?)),
        };
        Ok(Self { linear_1, mlp_tail })
    }
}

impl Module for Projector {
    fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let x = self.linear_1.forward(features)?;
        match &self.mlp_tail {
            None => Ok(x),
            Some((act, linear_2)) => linear_2.forward(&act.apply(&x)?),
        }
    }
}
