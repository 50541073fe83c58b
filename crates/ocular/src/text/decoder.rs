//! The pre-norm decoder that Llama and Qwen2 share: RMSNorm, rotary self-attention with
//! grouped-query heads and a KV cache, SwiGLU MLP. Follows transformers' `modeling_llama.py`.
//! Positions arrive as cos/sin tables so that 1-D RoPE and M-RoPE both plug in.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::kv_cache::KvCache;
use super::rope::apply_rotary;
use crate::nn::{attention_weights, causal_mask, repeat_kv, scaled_dot_product_attention, Activation, Linear, Norm};

/// The shape of a decoder, taken from a family's config.
#[derive(Debug, Clone)]
pub struct DecoderSpec {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// Bias on the q, k and v projections (Llama: `attention_bias`; Qwen2: always).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama: `attention_bias`; Qwen2: never).
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub hidden_act: Activation,
}

impl DecoderSpec {
    /// The shape checks transformers makes at construction, reported before any weight is read.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let (heads, kv) = (self.num_heads, self.num_kv_heads);
        if heads == 0 || kv == 0 || heads % kv != 0 {
            return Err(format!(
                "text config: num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv})"
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(format!("text config: head_dim {} must be even for rotary embeddings", self.head_dim));
        }
        Ok(())
    }
}

fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    crate::nn::linear_b(in_dim, out_dim, bias, vb)
}

struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn load(s: &DecoderSpec, vb: VarBuilder) -> Result<Self> {
        let (h, hd) = (s.hidden_size, s.head_dim);
        Ok(Self {
            q_proj: linear(h, s.num_heads * hd, s.qkv_bias, vb.pp("q_proj"))?,
            k_proj: linear(h, s.num_kv_heads * hd, s.qkv_bias, vb.pp("k_proj"))?,
            v_proj: linear(h, s.num_kv_heads * hd, s.qkv_bias, vb.pp("v_proj"))?,
            o_proj: linear(s.num_heads * hd, h, s.o_bias, vb.pp("o_proj"))?,
            num_heads: s.num_heads,
            num_kv_heads: s.num_kv_heads,
            head_dim: hd,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rot: &Rotation,
        mask: Option<&Tensor>,
        cache: (&mut KvCache, usize),
    ) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            // (batch, seq, heads * head_dim) -> (batch, heads, seq, head_dim)
            t.reshape((b, seq, n, self.head_dim))?.transpose(1, 2)
        };
        let q = heads(self.q_proj.forward(x)?, self.num_heads)?;
        let k = heads(self.k_proj.forward(x)?, self.num_kv_heads)?;
        let v = heads(self.v_proj.forward(x)?, self.num_kv_heads)?;
        let q = apply_rotary(&q, &rot.cos, &rot.sin)?;
        let k = apply_rotary(&k, &rot.cos, &rot.sin)?;
        let (cache, layer) = cache;
        let (k, v) = cache.append(layer, &k, &v.contiguous()?)?;
        let n_rep = self.num_heads / self.num_kv_heads;
        let (k, v) = (repeat_kv(&k, n_rep)?, repeat_kv(&v, n_rep)?);
        let out = scaled_dot_product_attention(&q, &k, &v, 1.0 / (self.head_dim as f64).sqrt(), mask)?;
        // (batch, heads, seq, head_dim) -> (batch, seq, heads * head_dim)
        let out = out.transpose(1, 2)?.reshape((b, seq, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }
}

impl SelfAttention {
    /// The softmaxed scores (heads, queries, seq) of the rows `queries` of the normed stream
    /// `x` (1, seq, hidden) over all of it, as [`Self::forward`] computes them without a cache.
    fn weights(&self, x: &Tensor, rot: &Rotation, mask: &Tensor, queries: &[u32]) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let rows = Tensor::new(queries, x.device())?;
        let heads = |t: Tensor, len: usize, n: usize| t.reshape((b, len, n, self.head_dim))?.transpose(1, 2);
        let q = heads(self.q_proj.forward(&x.index_select(&rows, 1)?)?, queries.len(), self.num_heads)?;
        let k = heads(self.k_proj.forward(x)?, seq, self.num_kv_heads)?;
        let q = apply_rotary(&q.contiguous()?, &rot.cos.index_select(&rows, 0)?, &rot.sin.index_select(&rows, 0)?)?;
        let k = repeat_kv(&apply_rotary(&k.contiguous()?, &rot.cos, &rot.sin)?, self.num_heads / self.num_kv_heads)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        attention_weights(&q, &k, scale, Some(&mask.index_select(&rows, 0)?))?.squeeze(0)
    }

    /// One new token for each of several sequences: x (seqs, 1, hidden). The projections run
    /// as one batch; RoPE and attention per sequence, each over its own cache and positions.
    fn decode_batch(&self, x: &Tensor, rots: &[Rotation], caches: &mut [&mut KvCache], layer: usize) -> Result<Tensor> {
        let b = x.dim(0)?;
        let heads = |t: Tensor, n: usize| t.reshape((b, 1, n, self.head_dim))?.transpose(1, 2);
        let q = heads(self.q_proj.forward(x)?, self.num_heads)?;
        let k = heads(self.k_proj.forward(x)?, self.num_kv_heads)?;
        let v = heads(self.v_proj.forward(x)?, self.num_kv_heads)?;
        let n_rep = self.num_heads / self.num_kv_heads;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut outs = Vec::with_capacity(b);
        for (i, (rot, cache)) in rots.iter().zip(caches.iter_mut()).enumerate() {
            let q = apply_rotary(&q.narrow(0, i, 1)?, &rot.cos, &rot.sin)?;
            let k = apply_rotary(&k.narrow(0, i, 1)?, &rot.cos, &rot.sin)?;
            let (k, v) = cache.append(layer, &k, &v.narrow(0, i, 1)?.contiguous()?)?;
            outs.push(scaled_dot_product_attention(&q, &repeat_kv(&k, n_rep)?, &repeat_kv(&v, n_rep)?, scale, None)?);
        }
        let out = Tensor::cat(&outs, 0)?.transpose(1, 2)?.reshape((b, 1, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }
}

/// SwiGLU: down(act(gate(x)) * up(x)).
struct GatedMlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: Activation,
}

impl GatedMlp {
    fn load(s: &DecoderSpec, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (s.hidden_size, s.intermediate_size);
        Ok(Self {
            gate_proj: linear(h, i, s.mlp_bias, vb.pp("gate_proj"))?,
            up_proj: linear(h, i, s.mlp_bias, vb.pp("up_proj"))?,
            down_proj: linear(i, h, s.mlp_bias, vb.pp("down_proj"))?,
            act: s.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.act.apply(&self.gate_proj.forward(x)?)?;
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

struct DecoderLayer {
    self_attn: SelfAttention,
    mlp: GatedMlp,
    input_layernorm: Norm,
    post_attention_layernorm: Norm,
}

impl DecoderLayer {
    fn load(s: &DecoderSpec, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            self_attn: SelfAttention::load(s, vb.pp("self_attn"))?,
            mlp: GatedMlp::load(s, vb.pp("mlp"))?,
            input_layernorm: Norm::rms(s.hidden_size, s.rms_norm_eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: Norm::rms(s.hidden_size, s.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rot: &Rotation,
        mask: Option<&Tensor>,
        cache: (&mut KvCache, usize),
    ) -> Result<Tensor> {
        let x = (x + self.self_attn.forward(&self.input_layernorm.forward(x)?, rot, mask, cache)?)?;
        &x + self.mlp.forward(&self.post_attention_layernorm.forward(&x)?)?
    }
}

impl DecoderLayer {
    fn decode_batch(&self, x: &Tensor, rots: &[Rotation], caches: &mut [&mut KvCache], layer: usize) -> Result<Tensor> {
        let attn = self.self_attn.decode_batch(&self.input_layernorm.forward(x)?, rots, caches, layer)?;
        let x = (x + attn)?;
        &x + self.mlp.forward(&self.post_attention_layernorm.forward(&x)?)?
    }
}

/// cos and sin for the positions of this step, each (seq, head_dim / 2).
pub struct Rotation {
    pub cos: Tensor,
    pub sin: Tensor,
}

/// Token embeddings, decoder layers, final norm and the output head.
pub struct CausalDecoder {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: Norm,
    lm_head: Linear,
    spec: DecoderSpec,
}

/// Where the output head's weight comes from.
pub enum Head<'a> {
    /// The transposed input embedding (`tie_word_embeddings`).
    Tied,
    /// Its own tensor under this prefix (`lm_head`).
    Own(VarBuilder<'a>),
}

impl CausalDecoder {
    /// `vb` points at the text model (`embed_tokens`, `layers`, `norm`).
    pub fn load(spec: DecoderSpec, vb: VarBuilder, head: Head) -> Result<Self> {
        let embed_tokens = candle_nn::embedding(spec.vocab_size, spec.hidden_size, vb.pp("embed_tokens"))?;
        let layers = (0..spec.num_layers)
            .map(|i| DecoderLayer::load(&spec, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = Norm::rms(spec.hidden_size, spec.rms_norm_eps, vb.pp("norm"))?;
        let lm_head = match head {
            Head::Tied => Linear::new(embed_tokens.embeddings().clone(), None),
            Head::Own(vb) => crate::nn::linear_b(spec.hidden_size, spec.vocab_size, false, vb)?,
        };
        Ok(Self { embed_tokens, layers, norm, lm_head, spec })
    }

    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// (batch, seq) ids -> (batch, seq, hidden) embeddings.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(ids)
    }

    /// Run `embeds` (batch, seq, hidden) after the cached positions; returns f32 logits of the
    /// last position (batch, vocab). Only the last position goes through the head: that is
    /// all generation needs.
    pub fn forward(&self, embeds: &Tensor, rot: &Rotation, cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.hidden_states(embeds, rot, cache)?;
        let last = hidden.narrow(1, hidden.dim(1)? - 1, 1)?;
        self.logits(&last)?.squeeze(1)
    }

    /// The final-norm hidden states of every position (batch, seq, hidden); training reads the
    /// positions it scores.
    pub fn hidden_states(&self, embeds: &Tensor, rot: &Rotation, cache: &mut KvCache) -> Result<Tensor> {
        let seq = embeds.dim(1)?;
        let offset = cache.seq_len();
        let mask = if seq > 1 { Some(causal_mask(seq, offset, embeds.device())?) } else { None };
        Ok(self.run_layers(embeds, rot, mask.as_ref(), cache, &[])?.0)
    }

    /// Like [`Self::hidden_states`] from an empty cache, with the caller's (seq, seq) additive
    /// mask in place of the causal one (training packs several sequences into one). For each
    /// `k` in `taps`, also the residual stream after the first `k` layers (auxiliary losses
    /// read them), in the order asked.
    pub fn hidden_states_masked(
        &self,
        embeds: &Tensor,
        rot: &Rotation,
        mask: &Tensor,
        taps: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        self.run_layers(embeds, rot, Some(mask), &mut self.new_cache(), taps)
    }

    /// Layer `layer`'s attention weights (heads, queries, seq) at the rows `queries` of `x`
    /// (1, seq, hidden), the residual stream entering that layer (a tap of
    /// [`Self::hidden_states_masked`] with the same rotation and mask). Recomputed from the
    /// layer's own projections, so a loss on them trains where the layer looks.
    pub fn attention_weights(
        &self,
        layer: usize,
        x: &Tensor,
        rot: &Rotation,
        mask: &Tensor,
        queries: &[u32],
    ) -> Result<Tensor> {
        let l = self.layers.get(layer).ok_or_else(|| {
            candle_core::Error::Msg(format!("attention weights: no layer {layer} of {}", self.layers.len()))
        })?;
        l.self_attn.weights(&l.input_layernorm.forward(x)?, rot, mask, queries)
    }

    fn run_layers(
        &self,
        embeds: &Tensor,
        rot: &Rotation,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        taps: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = embeds.clone();
        let mut tapped: Vec<Option<Tensor>> = vec![None; taps.len()];
        for i in 0..=self.layers.len() {
            for (slot, _) in tapped.iter_mut().zip(taps).filter(|(_, &k)| k == i) {
                *slot = Some(x.clone());
            }
            if let Some(layer) = self.layers.get(i) {
                x = layer.forward(&x, rot, mask, (cache, i))?;
            }
        }
        let tapped = tapped
            .into_iter()
            .zip(taps)
            .map(|(t, k)| t.ok_or_else(|| candle_core::Error::Msg(format!("no tap after layer {k}"))))
            .collect::<Result<_>>()?;
        Ok((self.norm.forward(&x)?, tapped))
    }

    /// f32 logits of hidden states (..., hidden) -> (..., vocab).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)?.to_dtype(candle_core::DType::F32)
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// One decode step for several sequences at once: `embeds` (seqs, 1, hidden), each
    /// sequence with its rotation and cache. Returns f32 logits (seqs, vocab), the same as
    /// [`Self::forward`] on each alone; the linear layers see all rows in one matrix product.
    pub fn decode_batch(&self, embeds: &Tensor, rots: &[Rotation], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let mut x = embeds.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.decode_batch(&x, rots, caches, i)?;
        }
        self.logits(&self.norm.forward(&x)?)?.squeeze(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    /// The weights training supervises are those the forward pass mixes the values with.
    #[test]
    fn attention_weights_are_what_the_forward_pass_uses() {
        let dev = Device::Cpu;
        let spec = DecoderSpec {
            vocab_size: 8,
            hidden_size: 16,
            intermediate_size: 8,
            num_layers: 1,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 4,
            rms_norm_eps: 1e-6,
            qkv_bias: true,
            o_bias: false,
            mlp_bias: false,
            hidden_act: Activation::Silu,
        };
        let vars = candle_nn::VarMap::new();
        let attn = SelfAttention::load(&spec, VarBuilder::from_varmap(&vars, DType::F32, &dev)).unwrap();
        let seq = 5;
        let x = Tensor::randn(0f32, 1.0, (1, seq, 16), &dev).unwrap();
        let angles = Tensor::randn(0f32, 1.0, (seq, 2), &dev).unwrap();
        let rot = Rotation { cos: angles.cos().unwrap(), sin: angles.sin().unwrap() };
        let mask = causal_mask(seq, 0, &dev).unwrap();
        let out = attn.forward(&x, &rot, Some(&mask), (&mut KvCache::new(1), 0)).unwrap();

        let queries = [1u32, 4];
        let w = attn.weights(&x, &rot, &mask, &queries).unwrap();
        assert_eq!(w.dims(), &[4, 2, seq]);
        let sums = w.sum(D::Minus1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
        // Query 1 sees keys 0 and 1 only.
        assert!(w.get(0).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap()[2..].iter().all(|&p| p == 0.0));
        let v = attn.v_proj.forward(&x).unwrap().reshape((1, seq, 2, 4)).unwrap().transpose(1, 2).unwrap();
        let v = repeat_kv(&v, 2).unwrap().squeeze(0).unwrap().contiguous().unwrap();
        let mixed = w.matmul(&v).unwrap().transpose(0, 1).unwrap().reshape((2, 16)).unwrap();
        let ours = attn.o_proj.forward(&mixed).unwrap();
        let theirs = out.squeeze(0).unwrap().index_select(&Tensor::new(&queries, &dev).unwrap(), 0).unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
