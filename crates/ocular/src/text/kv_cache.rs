//! Keys and values of past positions, one entry per decoder layer, so a decode step
//! attends over the whole sequence while computing only the new token.

use candle_core::{Result, Tensor};

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        Self { layers: vec![None; n_layers] }
    }

    /// Number of positions cached.
    pub fn seq_len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dims()[2],
            _ => 0,
        }
    }

    /// Append this step's k, v (batch, kv_heads, new, head_dim) to `layer` and return all of them.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let kv = match self.layers[layer].take() {
            None => (k.contiguous()?, v.contiguous()?),
            Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
        };
        self.layers[layer] = Some(kv.clone());
        Ok(kv)
    }
}
