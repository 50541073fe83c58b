//! AdamW (Loshchilov & Hutter 2019) with decoupled weight decay, a linear warm-up into a cosine
//! schedule, and global-norm gradient clipping. Written here rather than taken from candle so
//! that its moments can be saved and a run resumed exactly.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

use super::config::Optim;

/// Learning rate of a question step (0-based, counted from the first question step).
pub fn learning_rate(o: &Optim, step: usize) -> f64 {
    let ramp = o.warmup_steps;
    Schedule { lr: o.lr, ramp, decay_from: ramp, steps: o.steps, min_lr_ratio: o.min_lr_ratio }.at(step)
}

/// A linear ramp over `ramp` steps, constant up to `decay_from`, then cosine down to
/// `min_lr_ratio * lr` at `steps` (a ratio of 1 keeps it constant throughout).
pub struct Schedule {
    pub lr: f64,
    pub ramp: usize,
    /// The step the cosine starts from (at least `ramp`).
    pub decay_from: usize,
    pub steps: usize,
    pub min_lr_ratio: f64,
}

impl Schedule {
    /// The learning rate at `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.ramp {
            return self.lr * (step + 1) as f64 / self.ramp as f64;
        }
        let from = self.decay_from.max(self.ramp);
        let span = (self.steps.saturating_sub(from)).max(1) as f64;
        let progress = (step.saturating_sub(from) as f64 / span).min(1.0);
        let min = self.lr * self.min_lr_ratio;
        min + (self.lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

pub struct AdamW {
    params: Vec<Param>,
    /// Steps taken by the run (some of them may have updated only some parameters).
    pub step: usize,
}

struct Param {
    name: String,
    var: Var,
    /// First and second moments.
    m: Tensor,
    v: Tensor,
    /// Updates this parameter has had: its moments' bias correction counts these, not the
    /// run's steps, so that a part first trained late (the language model after a vision-only
    /// warm-up, a head added on resuming) starts as AdamW starts, rather than with its moments
    /// taken as already warm (an update up to ~6x the learning rate in its first steps).
    updates: usize,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let zeros = var.zeros_like()?;
                Ok(Param { name, var, m: zeros.clone(), v: zeros, updates: 0 })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { params, step: 0 })
    }

    /// Scales `grads` so their global L2 norm is at most `max_norm`; returns the norm before.
    pub fn clip(&self, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
        let mut total = 0f64;
        for Param { var, .. } in &self.params {
            if let Some(g) = grads.get(var.as_tensor()) {
                total += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
        }
        let norm = total.sqrt();
        if norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            for Param { var, .. } in &self.params {
                if let Some(g) = grads.remove(var.as_tensor()) {
                    grads.insert(var.as_tensor(), (g * scale)?);
                }
            }
        }
        Ok(norm)
    }

    /// One AdamW step, each parameter at the learning rate `lr_of` gives for its name.
    pub fn apply(&mut self, grads: &GradStore, o: &Optim, lr_of: &dyn Fn(&str) -> f64) -> Result<()> {
        self.step += 1;
        for Param { name, var, m, v, updates } in self.params.iter_mut() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            *updates += 1;
            let t = *updates as i32;
            let (c1, c2) = (1.0 - o.beta1.powi(t), 1.0 - o.beta2.powi(t));
            let lr = lr_of(name);
            *m = ((&*m * o.beta1)? + (g * (1.0 - o.beta1))?)?;
            *v = ((&*v * o.beta2)? + (g.sqr()? * (1.0 - o.beta2))?)?;
            let update = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + o.eps)?)?;
            // Decay matrices only: norms' scales and biases keep their values.
            let decay = if var.rank() >= 2 { o.weight_decay } else { 0.0 };
            let next = ((var.as_tensor() * (1.0 - lr * decay))? - (update * lr)?)?;
            var.set(&next)?;
        }
        Ok(())
    }

    /// Saves the moments and step, to resume a run where it stopped.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for Param { name, m, v, updates, .. } in &self.params {
            tensors.insert(format!("m.{name}"), m.clone());
            tensors.insert(format!("v.{name}"), v.clone());
            tensors.insert(format!("t.{name}"), Tensor::new(&[*updates as u32], m.device())?);
        }
        tensors.insert("step".into(), Tensor::new(&[self.step as u32], m_device(&self.params))?);
        candle_core::safetensors::save(&tensors, path)
    }

    /// Restores what [`Self::save`] wrote. Variables for which `fresh` holds may be missing
    /// (a head added since): their moments stay zero.
    pub fn load(&mut self, path: &Path, fresh: &dyn Fn(&str) -> bool) -> Result<()> {
        let saved = candle_core::safetensors::load(path, m_device(&self.params))?;
        let get = |k: &str| {
            saved.get(k).cloned().ok_or_else(|| candle_core::Error::Msg(format!("{}: no {k}", path.display())))
        };
        self.step = get("step")?.to_vec1::<u32>()?[0] as usize;
        for Param { name, m, v, updates, .. } in self.params.iter_mut() {
            if fresh(name) && !saved.contains_key(&format!("m.{name}")) {
                continue;
            }
            *m = get(&format!("m.{name}"))?;
            *v = get(&format!("v.{name}"))?;
            // Checkpoints written before the counts were kept: a parameter updated at all was
            // updated on every step (vision-only warm-ups, frozen-vision question stages).
            *updates = match saved.get(&format!("t.{name}")) {
                Some(t) => t.to_vec1::<u32>()?[0] as usize,
                None if v.abs()?.sum_all()?.to_scalar::<f32>()? == 0.0 => 0,
                None => self.step,
            };
        }
        Ok(())
    }
}

fn m_device(params: &[Param]) -> &candle_core::Device {
    params.first().map(|p| p.m.device()).unwrap_or(&candle_core::Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::Dense;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let o = Optim { steps: 110, warmup_steps: 10, lr: 1.0, min_lr_ratio: 0.1, ..Default::default() };
        assert!((learning_rate(&o, 0) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&o, 9) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&o, 60) - 0.55).abs() < 1e-9);
        assert!((learning_rate(&o, 110) - 0.1).abs() < 1e-12);
        // The dense warm-up's: constant after its ramp with a ratio of 1, else cosine.
        let dense = |min_lr_ratio| Dense { warmup_steps: 1050, lr: 2.0, min_lr_ratio, ..Default::default() };
        let flat = dense(1.0).schedule();
        assert_eq!((flat.at(0), flat.at(49), flat.at(500), flat.at(1049)), (0.04, 2.0, 2.0, 2.0));
        let decayed = dense(0.05).schedule();
        assert!((decayed.at(550) - 1.05).abs() < 1e-9 && (decayed.at(1050) - 0.1).abs() < 1e-12);
        // With decay_steps, constant until the last ones.
        let late = Dense { decay_steps: 200, ..dense(0.05) }.schedule();
        assert!(late.at(60) == 2.0 && (late.at(850) - 2.0).abs() < 1e-12);
        assert!((late.at(950) - 1.05).abs() < 1e-9 && (late.at(1050) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn adamw_minimises_a_quadratic_and_clipping_bounds_the_norm() {
        let dev = Device::Cpu;
        let x = Var::new(&[3.0f32, -2.0], &dev).unwrap();
        let mut opt = AdamW::new(vec![("x".into(), x.clone())]).unwrap();
        let o = Optim { weight_decay: 0.0, ..Default::default() };
        for _ in 0..300 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            let mut grads = loss.backward().unwrap();
            let norm = opt.clip(&mut grads, 1.0).unwrap();
            assert!(norm >= 0.0);
            let clipped =
                grads.get(x.as_tensor()).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(clipped.sqrt() <= 1.0 + 1e-4);
            opt.apply(&grads, &o, &|_| 0.05).unwrap();
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|a| a.abs() < 0.1), "{v:?}");
        let path = std::env::temp_dir().join(format!("ocular-adamw-{}.safetensors", std::process::id()));
        opt.save(&path).unwrap();
        let mut again = AdamW::new(vec![("x".into(), x.clone())]).unwrap();
        again.load(&path, &|_| false).unwrap();
        assert_eq!(again.step, 300);
        let _ = std::fs::remove_file(path);
    }

    /// A parameter first trained after others (the language model after the vision warm-up)
    /// starts as AdamW starts: its first update is the learning rate in size (counting the
    /// run's steps made it half that here, and ~3x after thousands of steps); and the counts
    /// survive a checkpoint, so a resumed run goes on exactly.
    #[test]
    fn each_parameter_counts_its_own_updates() {
        let dev = Device::Cpu;
        let (x, y) = (Var::new(&[1.0f32], &dev).unwrap(), Var::new(&[1.0f32], &dev).unwrap());
        let vars = || vec![("x".to_string(), x.clone()), ("y".to_string(), y.clone())];
        let mut opt = AdamW::new(vars()).unwrap();
        let o = Optim { weight_decay: 0.0, ..Default::default() };
        let step = |opt: &mut AdamW, both: bool| {
            let mut loss = (x.as_tensor() * 3.0).unwrap().sum_all().unwrap();
            if both {
                loss = (loss + (y.as_tensor() * 5.0).unwrap().sum_all().unwrap()).unwrap();
            }
            opt.apply(&loss.backward().unwrap(), &o, &|_| 0.01).unwrap();
        };
        for _ in 0..20 {
            step(&mut opt, false);
        }
        assert_eq!(y.as_tensor().to_vec1::<f32>().unwrap(), [1.0]);
        step(&mut opt, true);
        let moved = 1.0 - y.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((moved - 0.01).abs() < 1e-5, "first update of y: {moved}");
        let path = std::env::temp_dir().join(format!("ocular-adamw-counts-{}.safetensors", std::process::id()));
        opt.save(&path).unwrap();
        let mut again = AdamW::new(vars()).unwrap();
        again.load(&path, &|_| false).unwrap();
        let before = (x.as_tensor().to_vec1::<f32>().unwrap(), y.as_tensor().to_vec1::<f32>().unwrap());
        step(&mut opt, true);
        let straight = (x.as_tensor().to_vec1::<f32>().unwrap(), y.as_tensor().to_vec1::<f32>().unwrap());
        x.set(&Tensor::new(before.0.as_slice(), &dev).unwrap()).unwrap();
        y.set(&Tensor::new(before.1.as_slice(), &dev).unwrap()).unwrap();
        step(&mut again, true);
        let resumed = (x.as_tensor().to_vec1::<f32>().unwrap(), y.as_tensor().to_vec1::<f32>().unwrap());
        assert_eq!(straight, resumed);
        let _ = std::fs::remove_file(path);
    }
}
