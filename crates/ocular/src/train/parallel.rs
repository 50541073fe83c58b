//! Data parallelism for training steps on CPU. A small model's matrices are too small for
//! candle's per-operation threads to pay (on 2 cores one thread trains as fast as two), so a
//! step gives each worker whole items (packed samples, scenes): each item's loss and gradients
//! are computed on one thread, and the gradients are summed in item order, so a step's result
//! does not depend on how many threads computed it.
//!
//! A step's objective is a weighted sum of means, `Σ_k w_k · (Σ_i sum_ik) / (Σ_i count_ik)`,
//! where item `i` gives, for each part `k`, its summed loss and how many elements that sums
//! over. The denominators are known only once every item has been seen, so all items run
//! forward first, then each backward.

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// One part of one item's loss: a sum over `count` elements.
pub struct Part {
    pub sum: Tensor,
    pub count: f64,
}

/// What a step computed: the objective's value, each part's mean, and the gradients.
pub struct Step {
    pub objective: f32,
    /// `None` where no item had an element of that part.
    pub means: Vec<Option<f32>>,
    pub grads: GradStore,
}

/// Runs `forward` on every item (on `pool`'s threads when given), then differentiates
/// `Σ_k weights[k] · mean_k` item by item. `vars` are the tensors whose gradients are summed
/// across items; the returned store holds their totals.
pub fn step<T: Sync>(
    pool: Option<&rayon::ThreadPool>,
    items: &[T],
    weights: &[f64],
    vars: &[Tensor],
    forward: impl Fn(&T) -> Result<Vec<Option<Part>>> + Sync,
) -> Result<Step> {
    let outputs: Vec<Vec<Option<Part>>> = map(pool, items, &forward)?;
    let mut sums = vec![0f64; weights.len()];
    let mut counts = vec![0f64; weights.len()];
    for parts in &outputs {
        if parts.len() != weights.len() {
            return Err(Error::Invalid(format!("an item gave {} loss parts, expected {}", parts.len(), weights.len())));
        }
        for (k, part) in parts.iter().enumerate() {
            if let Some(p) = part {
                sums[k] += f64::from(p.sum.to_scalar::<f32>()?);
                counts[k] += p.count;
            }
        }
    }
    // Each part's weight over its total count: what one element of it adds to the objective.
    let scales: Vec<f64> = weights.iter().zip(&counts).map(|(w, &n)| if n > 0.0 { w / n } else { 0.0 }).collect();
    let backward = |parts: &Vec<Option<Part>>| -> Result<Option<GradStore>> {
        let mut objective: Option<Tensor> = None;
        for (part, &scale) in parts.iter().zip(&scales) {
            let Some(p) = part.as_ref().filter(|p| p.count > 0.0 && scale != 0.0) else { continue };
            let term = (&p.sum * scale)?;
            objective = Some(match objective {
                Some(o) => (o + term)?,
                None => term,
            });
        }
        objective.map(|o| o.backward().map_err(Error::from)).transpose()
    };
    let stores: Vec<Option<GradStore>> = map(pool, &outputs, &backward)?;
    drop(outputs);
    let grads = sum_in_order(stores, vars)?.ok_or_else(|| Error::Invalid("no item had anything to learn".into()))?;
    let objective =
        weights.iter().zip(sums.iter().zip(&counts)).map(|(w, (s, &n))| if n > 0.0 { w * s / n } else { 0.0 });
    let means = sums.iter().zip(&counts).map(|(s, &n)| (n > 0.0).then(|| (s / n) as f32)).collect();
    Ok(Step { objective: objective.sum::<f64>() as f32, means, grads })
}

/// A pool of `threads` threads for [`step`] and [`map`]; none for one thread.
pub fn pool(threads: usize) -> Result<Option<rayon::ThreadPool>> {
    if threads <= 1 {
        return Ok(None);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start {threads} threads: {e}")))?;
    Ok(Some(pool))
}

/// `f` over `items`, results in order, on `pool` when given. Each item is a task of its own
/// that any idle thread takes: items differ in cost (a clip of several frames, a scene of one
/// object), and halving the list between two threads left one idle ~15% of a step.
pub fn map<T: Sync, R: Send>(
    pool: Option<&rayon::ThreadPool>,
    items: &[T],
    f: &(impl Fn(&T) -> Result<R> + Sync),
) -> Result<Vec<R>> {
    match pool {
        Some(pool) => pool.install(|| items.par_iter().with_max_len(1).map(f).collect()),
        None => items.iter().map(f).collect(),
    }
}

/// The first store, its entries for `vars` replaced by their sums over all stores, added in
/// store order.
fn sum_in_order(stores: Vec<Option<GradStore>>, vars: &[Tensor]) -> Result<Option<GradStore>> {
    let mut stores = stores.into_iter().flatten();
    let Some(mut total) = stores.next() else { return Ok(None) };
    for store in stores {
        for var in vars {
            if let Some(g) = store.get(var) {
                let sum = match total.get(var) {
                    Some(t) => (t + g)?,
                    None => g.clone(),
                };
                total.insert(var, sum);
            }
        }
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Two parts over three items: the step's gradients and means equal those of the whole
    /// objective differentiated at once, with one thread or two.
    #[test]
    fn item_by_item_equals_all_at_once_on_any_number_of_threads() {
        let w = Var::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap();
        let xs: Vec<Vec<f32>> = vec![vec![1.0, 2.0, 3.0], vec![0.5, -1.0, 2.0], vec![-3.0, 0.0, 1.0]];
        // Part 0: sum of (w . x)^2 over items (count 1 each); part 1: sum of w^2 x over items
        // with a positive first coordinate (count 3 each), absent elsewhere.
        let forward = |x: &Vec<f32>| -> Result<Vec<Option<Part>>> {
            let x = Tensor::new(x.as_slice(), &Device::Cpu)?;
            let dot = (w.as_tensor() * &x)?.sum_all()?;
            let first = Part { sum: dot.sqr()?, count: 1.0 };
            let second = (x.to_vec1::<f32>()?[0] > 0.0)
                .then(|| Ok::<_, Error>(Part { sum: (w.as_tensor().sqr()? * &x)?.sum_all()?, count: 3.0 }))
                .transpose()?;
            Ok(vec![Some(first), second])
        };
        let weights = [1.0, 0.5];
        let vars = [w.as_tensor().clone()];
        let sequential = step(None, &xs, &weights, &vars, forward).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let parallel = step(Some(&pool), &xs, &weights, &vars, forward).unwrap();
        // The whole objective at once.
        let mut first = Vec::new();
        let mut second = Vec::new();
        for x in &xs {
            let parts = forward(x).unwrap();
            first.push(parts[0].as_ref().unwrap().sum.clone());
            if let Some(p) = &parts[1] {
                second.push(p.sum.clone());
            }
        }
        let mean0 = (Tensor::stack(&first, 0).unwrap().sum_all().unwrap() / 3.0).unwrap();
        let mean1 = (Tensor::stack(&second, 0).unwrap().sum_all().unwrap() / 6.0).unwrap();
        let whole = (&mean0 + (&mean1 * 0.5).unwrap()).unwrap();
        let want = whole.backward().unwrap().get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for s in [&sequential, &parallel] {
            let got = s.grads.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{got:?} vs {want:?}");
            }
            assert!((s.objective - whole.to_scalar::<f32>().unwrap()).abs() < 1e-4);
            assert!((s.means[0].unwrap() - mean0.to_scalar::<f32>().unwrap()).abs() < 1e-4);
            assert!((s.means[1].unwrap() - mean1.to_scalar::<f32>().unwrap()).abs() < 1e-4);
        }
        // Summed in item order: bit for bit the same whatever the threads.
        assert_eq!(
            sequential.grads.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            parallel.grads.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn a_part_no_item_has_is_reported_absent() {
        let w = Var::new(&[2.0f32], &Device::Cpu).unwrap();
        let forward = |_: &u8| -> Result<Vec<Option<Part>>> {
            Ok(vec![Some(Part { sum: w.as_tensor().sum_all()?, count: 1.0 }), None])
        };
        let s = step(None, &[0u8, 1], &[1.0, 1.0], &[w.as_tensor().clone()], forward).unwrap();
        assert_eq!(s.means, vec![Some(2.0), None]);
        assert_eq!(s.objective, 2.0);
        assert_eq!(s.grads.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![1.0]);
    }
}
