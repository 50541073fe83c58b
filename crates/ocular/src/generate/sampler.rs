//! Picks the next token from a row of logits, following transformers' logits processors and
//! their order (transformers/generation/logits_process.py): repetition penalty, then
//! temperature, top-k, top-p, min-p, then softmax and a seeded draw. Greedy decoding applies
//! only the repetition penalty and takes the argmax, as transformers does with `do_sample=False`.

use super::config::GenerationConfig;
use super::logits::{apply_repetition_penalty, argmax, min_p_keep, softmax, top_k_filter, top_p_keep};
use super::GenerateError;
use crate::rng::Rng;

/// How to choose tokens. The "off" values leave the distribution untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep the `top_k` highest-scoring tokens (ties with the last kept all stay); `0` = off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; `1` = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; `0` = off.
    pub min_p: f32,
    /// CTRL-style penalty on tokens already in the context; `1` = off.
    pub repetition_penalty: f32,
    /// Seed of the PRNG; the same seed and inputs give the same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Greedy, like transformers when `do_sample` is not set.
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    /// Argmax decoding, no penalty.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: 0 }
    }

    /// transformers' choice for a model's `generation_config.json`: greedy unless `do_sample` is
    /// true (the repetition penalty applies either way); unset fields take transformers'
    /// defaults: temperature 1, top-k 50, top-p 1, no min-p, penalty 1. A field written as
    /// `null` reads as unset here, so `"top_k": null` gives 50 (transformers would switch
    /// top-k off).
    pub fn from_generation_config(config: &GenerationConfig, seed: u64) -> Self {
        let repetition_penalty = config.repetition_penalty.unwrap_or(1.0);
        if !config.do_sample.unwrap_or(false) {
            return Self { repetition_penalty, seed, ..Self::greedy() };
        }
        Self {
            temperature: config.temperature.unwrap_or(1.0),
            top_k: config.top_k.unwrap_or(50),
            top_p: config.top_p.unwrap_or(1.0),
            min_p: config.min_p.unwrap_or(0.0),
            repetition_penalty,
            seed,
        }
    }

    /// Whether sampling reduces to an argmax: temperature 0 (or below, or NaN, which
    /// [`validate`](Self::validate) rejects).
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature <= 0.0
    }

    /// Rejects values that have no meaning (for requests from users; [`Sampler`] itself does
    /// not check).
    pub fn validate(&self) -> Result<(), GenerateError> {
        let bad = |name, value: f32, expected| {
            Err(GenerateError::InvalidSampling { name, value: value.to_string(), expected })
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", self.temperature, "a finite number >= 0");
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top_p", self.top_p, "a number in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "a number in [0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition_penalty", self.repetition_penalty, "a finite number > 0");
        }
        Ok(())
    }
}

/// The sampling fields a user may set (a CLI flag, a request field); unset ones keep what the
/// model's generation_config.json gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingOverrides {
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
}

impl SamplingOverrides {
    pub fn apply(&self, mut p: SamplingParams) -> SamplingParams {
        p.temperature = self.temperature.unwrap_or(p.temperature);
        p.top_k = self.top_k.unwrap_or(p.top_k);
        p.top_p = self.top_p.unwrap_or(p.top_p);
        p.min_p = self.min_p.unwrap_or(p.min_p);
        p.repetition_penalty = self.repetition_penalty.unwrap_or(p.repetition_penalty);
        p
    }
}

/// Draws tokens according to [`SamplingParams`], with its own seeded PRNG: one `Sampler` per
/// generated sequence makes the output reproducible.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token id for one row of `logits` (vocabulary length). `context` is what the
    /// repetition penalty looks at; transformers passes the whole sequence, prompt included.
    /// Ids in `context` beyond the vocabulary are ignored. NaN logits are never chosen.
    ///
    /// # Panics
    /// If `logits` is empty.
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        assert!(!logits.is_empty(), "Sampler::sample: empty logits");
        let mut scores = logits.to_vec();
        if self.params.repetition_penalty != 1.0 {
            apply_repetition_penalty(&mut scores, context, self.params.repetition_penalty);
        }
        if self.params.is_greedy() {
            return argmax(&scores);
        }
        let t = self.params.temperature;
        // Only finite scores can be drawn; the rest (masked with -inf by a model, or NaN)
        // have probability zero.
        let mut cands: Vec<(u32, f32)> =
            scores.iter().enumerate().filter(|(_, s)| s.is_finite()).map(|(i, &s)| (i as u32, s / t)).collect();
        if cands.is_empty() {
            return argmax(&scores);
        }
        top_k_filter(&mut cands, self.params.top_k);
        let (top_p, min_p) = (self.params.top_p, self.params.min_p);
        // Top-p and min-p need the candidates sorted. After top-k they are few, and sorting
        // them also makes the draw order independent of how the selection shuffled them.
        // Plain sampling skips the sort of the whole vocabulary and draws in id order.
        if self.params.top_k > 0 || top_p < 1.0 || min_p > 0.0 {
            // Highest first; among equal scores the lowest id first, so it is the one kept
            // at a boundary (torch's sort leaves that order unspecified).
            cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        let mut probs = softmax(&cands);
        if top_p < 1.0 {
            let keep = top_p_keep(&probs, top_p);
            cands.truncate(keep);
            probs.truncate(keep);
        }
        if min_p > 0.0 {
            let keep = min_p_keep(&probs, min_p);
            cands.truncate(keep);
            probs.truncate(keep);
        }
        // Draw against the unnormalised kept mass: the same as renormalising first.
        let total: f64 = probs.iter().sum();
        let mut u = self.rng.next_f64() * total;
        for (&(id, _), &p) in cands.iter().zip(&probs) {
            if u < p {
                return id;
            }
            u -= p;
        }
        // Only reached through rounding in the subtraction: the last kept token.
        cands[cands.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_the_fields_they_set() {
        let base = SamplingParams { temperature: 0.7, top_k: 50, seed: 9, ..SamplingParams::greedy() };
        let set = SamplingOverrides { temperature: Some(0.0), top_p: Some(0.5), ..Default::default() };
        assert_eq!(set.apply(base.clone()), SamplingParams { temperature: 0.0, top_p: 0.5, ..base.clone() });
        assert_eq!(SamplingOverrides::default().apply(base.clone()), base);
    }

    /// Plain sampling at temperature 1 with `seed`; tests change one field at a time.
    fn sampling(seed: u64) -> SamplingParams {
        SamplingParams { temperature: 1.0, seed, ..SamplingParams::greedy() }
    }

    /// Logits whose softmax is `probs` (up to rounding).
    fn logits_of(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| p.ln() as f32).collect()
    }

    /// How often each token comes out in `draws` samples.
    fn counts(params: SamplingParams, logits: &[f32], draws: usize) -> Vec<usize> {
        let mut s = Sampler::new(params);
        let mut c = vec![0; logits.len()];
        for _ in 0..draws {
            c[s.sample(logits, &[]) as usize] += 1;
        }
        c
    }

    #[test]
    fn greedy_takes_argmax_with_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 2.0, -1.0, 1.5], &[]), 1);
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, 2.0], &[]), 1);
        // Temperature 0 is greedy whatever the other settings.
        let mut p = sampling(3);
        (p.temperature, p.top_k, p.top_p) = (0.0, 5, 0.9);
        let mut s = Sampler::new(p);
        assert!((0..100).all(|_| s.sample(&[0.0, 0.5, 0.4], &[]) == 1));
    }

    #[test]
    fn repetition_penalty_applies_in_greedy_and_sampling() {
        // Token 0 (score 2) falls below token 2 (score 1.5) once penalised by 2.
        let greedy = SamplingParams { repetition_penalty: 2.0, ..SamplingParams::greedy() };
        let mut s = Sampler::new(greedy);
        assert_eq!(s.sample(&[2.0, -2.0, 1.5], &[]), 0);
        assert_eq!(s.sample(&[2.0, -2.0, 1.5], &[0, 0]), 2);
        // A huge penalty on a negative logit makes it unreachable when sampling.
        let mut p = sampling(8);
        p.repetition_penalty = 1000.0;
        let mut s = Sampler::new(p);
        assert!((0..1000).all(|_| s.sample(&[-0.1, -0.1], &[1]) == 0));
    }

    #[test]
    fn top_k_never_yields_beyond_k() {
        let c = counts(SamplingParams { top_k: 2, ..sampling(1) }, &logits_of(&[0.4, 0.35, 0.25]), 1000);
        assert_eq!(c[2], 0, "{c:?}");
        assert!(c[0] > 0 && c[1] > 0, "{c:?}");
    }

    #[test]
    fn top_p_never_yields_outside_the_nucleus() {
        let logits = logits_of(&[0.5, 0.3, 0.2]);
        let c = counts(SamplingParams { top_p: 0.79, ..sampling(2) }, &logits, 1000);
        assert_eq!(c[2], 0, "{c:?}");
        assert!(c[1] > 0, "{c:?}");
        let c = counts(SamplingParams { top_p: 0.81, ..sampling(2) }, &logits, 1000);
        assert!(c[2] > 0, "{c:?}");
    }

    #[test]
    fn min_p_never_yields_unlikely_tokens() {
        let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
        let c = counts(SamplingParams { min_p: 0.5, ..sampling(4) }, &logits, 1000);
        assert_eq!(c[2] + c[3], 0, "{c:?}");
        assert!(c[1] > 0, "{c:?}");
    }

    #[test]
    fn filters_apply_after_temperature() {
        // At temperature 0.5 the probabilities sharpen from [0.5, 0.3, 0.2] to about
        // [0.66, 0.24, 0.11], so top-p 0.85 keeps two tokens instead of three.
        let logits = logits_of(&[0.5, 0.3, 0.2]);
        let sharp = SamplingParams { temperature: 0.5, top_p: 0.85, ..sampling(5) };
        assert_eq!(counts(sharp, &logits, 2000)[2], 0);
        assert!(counts(SamplingParams { top_p: 0.85, ..sampling(5) }, &logits, 2000)[2] > 0);
    }

    #[test]
    fn same_seed_same_sequence_different_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(sampling(seed));
            (0..64).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn frequencies_match_softmax() {
        let logits = [1.0f32, 0.0, -1.0, 2.0];
        let exps: Vec<f64> = logits.iter().map(|&l| (l as f64).exp()).collect();
        let sum: f64 = exps.iter().sum();
        let n = 100_000;
        let c = counts(sampling(11), &logits, n);
        for (i, e) in exps.iter().enumerate() {
            let expected = e / sum;
            let got = c[i] as f64 / n as f64;
            // Five standard deviations of a binomial proportion.
            let tol = 5.0 * (expected * (1.0 - expected) / n as f64).sqrt();
            assert!((got - expected).abs() < tol, "token {i}: {got} vs {expected}");
        }
    }

    #[test]
    fn masked_tokens_are_never_drawn() {
        let c = counts(sampling(6), &[f32::NEG_INFINITY, 0.0, f32::NAN, 0.0], 1000);
        assert_eq!(c[0] + c[2], 0, "{c:?}");
        assert!(c[1] > 0 && c[3] > 0, "{c:?}");
        assert_eq!(Sampler::new(sampling(6)).sample(&[f32::NEG_INFINITY; 3], &[]), 0);
    }

    #[test]
    fn params_from_generation_config() {
        let greedy = GenerationConfig { temperature: Some(0.7), repetition_penalty: Some(1.1), ..Default::default() };
        let p = SamplingParams::from_generation_config(&greedy, 5);
        assert_eq!(p, SamplingParams { repetition_penalty: 1.1, seed: 5, ..SamplingParams::greedy() });
        assert!(p.is_greedy());

        let sample = GenerationConfig { do_sample: Some(true), top_p: Some(0.9), ..Default::default() };
        let p = SamplingParams::from_generation_config(&sample, 1);
        assert_eq!((p.temperature, p.top_k, p.top_p, p.min_p), (1.0, 50, 0.9, 0.0));
        assert!(!p.is_greedy());
    }

    #[test]
    fn validate_names_the_parameter() {
        assert!(SamplingParams::greedy().validate().is_ok());
        let e = SamplingParams { top_p: 1.5, ..sampling(0) }.validate().unwrap_err();
        assert_eq!(e.to_string(), "sampling parameter `top_p` is 1.5; expected a number in [0, 1]");
        let e = SamplingParams { temperature: -1.0, ..sampling(0) }.validate().unwrap_err();
        assert!(e.to_string().contains("`temperature` is -1"), "{e}");
        let e = SamplingParams { repetition_penalty: 0.0, ..sampling(0) }.validate().unwrap_err();
        assert!(e.to_string().contains("`repetition_penalty`"), "{e}");
        assert!(SamplingParams { min_p: f32::NAN, ..sampling(0) }.validate().is_err());
    }
}
