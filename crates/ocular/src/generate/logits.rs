//! The logits processors of transformers (transformers/generation/logits_process.py) that
//! the sampler chains: repetition penalty, top-k, top-p, min-p, and the argmax of greedy
//! decoding. Each matches its Python counterpart's boundary rules, which decide what
//! survives when probabilities tie or land exactly on a threshold.

/// transformers' `RepetitionPenaltyLogitsProcessor`: each distinct id in `context` has its
/// score divided by `penalty` if positive and multiplied if negative, so a penalty > 1 always
/// makes it less likely. Each id is penalised once however often it occurs.
pub(super) fn apply_repetition_penalty(scores: &mut [f32], context: &[u32], penalty: f32) {
    let mut seen = vec![false; scores.len()];
    for &id in context {
        let i = id as usize;
        if i < scores.len() && !seen[i] {
            seen[i] = true;
            let s = scores[i];
            scores[i] = if s < 0.0 { s * penalty } else { s / penalty };
        }
    }
}

/// Index of the largest score; ties go to the lowest id, like `torch.argmax`. NaN is skipped;
/// if everything is NaN the answer is 0.
pub(super) fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_score = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &s) in scores.iter().enumerate() {
        if !s.is_nan() && (!found || s > best_score) {
            best = i;
            best_score = s;
            found = true;
        }
    }
    best as u32
}

/// transformers' `TopKLogitsWarper`: drop scores strictly below the k-th largest, so ties
/// with the k-th all survive.
pub(super) fn top_k_filter(cands: &mut Vec<(u32, f32)>, k: usize) {
    if k == 0 || k >= cands.len() {
        return;
    }
    // O(n) selection rather than a full sort: the vocabulary can be 150k entries.
    let (_, kth, _) = cands.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
    let threshold = kth.1;
    cands.retain(|&(_, s)| s >= threshold);
}

/// Probabilities of the candidates' scores, in f64 so that the cumulative sums of top-p do
/// not drift over a large vocabulary. Shifted by the maximum so `exp` cannot overflow.
pub(super) fn softmax(cands: &[(u32, f32)]) -> Vec<f64> {
    let max = cands.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.1)) as f64;
    let exps: Vec<f64> = cands.iter().map(|&(_, s)| (s as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// transformers' `TopPLogitsWarper`, on probabilities sorted high to low: it sums from the
/// least likely token upwards and drops every token whose running sum is `<= 1 - top_p`,
/// never the most likely one. That keeps the smallest head whose mass is `>= top_p`.
/// Returns how many of the head to keep.
pub(super) fn top_p_keep(sorted_probs: &[f64], top_p: f32) -> usize {
    let threshold = 1.0 - top_p as f64;
    let mut cum = 0.0;
    let mut keep = sorted_probs.len();
    while keep > 1 {
        cum += sorted_probs[keep - 1];
        if cum > threshold {
            break;
        }
        keep -= 1;
    }
    keep
}

/// transformers' `MinPLogitsWarper`: drop tokens whose probability is below `min_p` times the
/// top probability, keeping at least the top one. Probabilities are sorted, so the kept
/// tokens are a head.
pub(super) fn min_p_keep(sorted_probs: &[f64], min_p: f32) -> usize {
    let cut = min_p as f64 * sorted_probs[0];
    sorted_probs.iter().skip(1).take_while(|&&p| p >= cut).count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_lowest_id_and_skips_nan() {
        assert_eq!(argmax(&[0.1, 2.0, -1.0, 1.5]), 1);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -5.0, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
        assert_eq!(argmax(&[f32::NAN; 2]), 0);
    }

    #[test]
    fn repetition_penalty_handles_sign_and_duplicates() {
        let mut scores = vec![2.0, -2.0, 1.0, 0.0];
        // 1 appears twice and is penalised once; 99 is outside the vocabulary.
        apply_repetition_penalty(&mut scores, &[0, 1, 1, 0, 3, 99], 2.0);
        assert_eq!(scores, vec![1.0, -4.0, 1.0, 0.0]);
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth() {
        let mut cands = vec![(0, 3.0), (1, 2.0), (2, 2.0), (3, 1.0)];
        top_k_filter(&mut cands, 2);
        cands.sort_by_key(|c| c.0);
        assert_eq!(cands, vec![(0, 3.0), (1, 2.0), (2, 2.0)]);
        let mut cands = vec![(0, 1.0), (1, 5.0), (2, 3.0)];
        top_k_filter(&mut cands, 1);
        assert_eq!(cands, vec![(1, 5.0)]);
        let mut all = vec![(0, 1.0), (1, 2.0)];
        top_k_filter(&mut all, 0);
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn top_p_keeps_smallest_head_reaching_p() {
        let probs = [0.5, 0.3, 0.2];
        assert_eq!(top_p_keep(&probs, 0.49), 1);
        assert_eq!(top_p_keep(&probs, 0.51), 2);
        assert_eq!(top_p_keep(&probs, 0.79), 2);
        assert_eq!(top_p_keep(&probs, 0.81), 3);
        assert_eq!(top_p_keep(&probs, 0.0), 1);
        // Exact boundaries (binary fractions, no rounding): a head of mass exactly top_p is
        // enough, because transformers drops tail tokens whose running sum is <= 1 - top_p.
        let exact = [0.5, 0.25, 0.25];
        assert_eq!(top_p_keep(&exact, 0.5), 1);
        assert_eq!(top_p_keep(&exact, 0.75), 2);
        assert_eq!(top_p_keep(&exact, 1.0), 3);
    }

    #[test]
    fn min_p_is_relative_to_the_top_probability() {
        let probs = [0.5, 0.3, 0.15, 0.05];
        assert_eq!(min_p_keep(&probs, 0.5), 2); // cut at 0.25
        assert_eq!(min_p_keep(&probs, 0.2), 3); // cut at 0.1
        assert_eq!(min_p_keep(&probs, 1.0), 1);
        // Exactly at the cut stays: transformers drops only `p < min_p * p_max`.
        let exact = [0.5, 0.25, 0.125, 0.125];
        assert_eq!(min_p_keep(&exact, 0.5), 2);
        assert_eq!(min_p_keep(&exact, 0.25), 4);
    }

    #[test]
    fn softmax_sums_to_one_and_is_shift_invariant() {
        let p = softmax(&[(0, 1000.0), (1, 999.0)]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let q = softmax(&[(1, 0.0), (0, 1.0)]);
        assert!((p[0] - q[1]).abs() < 1e-12);
    }
}
