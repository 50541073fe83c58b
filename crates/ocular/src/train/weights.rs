//! Where a run's weights start: seeded values for a new model or head, or the tensors of a
//! base model or checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::error::{Error, Result};
use crate::load::WeightIndex;
use crate::rng::splitmix64;

/// Deterministic initial weights: N(0, 0.02) for matrices and embeddings, ones for norm scales,
/// zeros for biases; each tensor's values depend only on the seed and its name.
pub fn init_weights(varmap: &VarMap, seed: u64) -> Result<()> {
    for (name, var) in varmap.data().lock().expect("var map lock").iter() {
        let n = var.elem_count();
        let values: Vec<f32> = if name.ends_with("bias") {
            vec![0.0; n]
        } else if var.rank() == 1 {
            vec![1.0; n]
        } else {
            let mut state =
                name.bytes().fold(seed ^ 0xA076_1D64_78BD_642F, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3));
            let mut uniform = || (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
            // Box-Muller.
            (0..n)
                .map(|_| {
                    (0.02
                        * (-2.0 * (uniform().max(1e-300)).ln()).sqrt()
                        * (2.0 * std::f64::consts::PI * uniform()).cos()) as f32
                })
                .collect()
        };
        let values =
            if name.ends_with("patch_embed.proj.weight") { zero_sum_rows(values, var.dims()[0]) } else { values };
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}

/// Each patch filter made to sum to zero, so that a flat grey patch (equal in every channel
/// after the processor's normalisation) starts at zero and the features the vision tower
/// first passes on are the objects' colours and edges rather than the background's brightness,
/// which otherwise dominates every token and hides the scene from the language model.
fn zero_sum_rows(mut values: Vec<f32>, rows: usize) -> Vec<f32> {
    let per_row = values.len() / rows.max(1);
    for row in values.chunks_mut(per_row.max(1)) {
        let mean = row.iter().sum::<f32>() / row.len() as f32;
        row.iter_mut().for_each(|v| *v -= mean);
    }
    values
}

/// Sets every variable from the tensors of the same name in `files` (a base model or a
/// checkpoint); a variable the files lack is an error that names it.
pub fn load_into(varmap: &VarMap, files: &[PathBuf]) -> Result<()> {
    let index = WeightIndex::read(files.to_vec())?;
    let vb = index.var_builder(DType::F32, &Device::Cpu, None)?;
    let dir = files.first().and_then(|f| f.parent()).unwrap_or(Path::new("."));
    for (name, var) in varmap.data().lock().expect("var map lock").iter() {
        let t = vb.get(var.shape(), name).map_err(|e| Error::weights(dir, &e))?;
        var.set(&t)?;
    }
    Ok(())
}

/// Writes `varmap`'s tensors to `path` as a model's weights: each in the dtype the same tensor
/// has in `base` (a fine-tuned base's files, so a bf16 base stays bf16), and with `base`'s
/// tensors the model never read (a CLIP tower's layers past the one LLaVA takes) carried
/// over unchanged, so transformers finds every weight it expects.
pub fn save_model(varmap: &VarMap, base: &[PathBuf], path: &Path) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let trained = varmap.data().lock().expect("var map lock");
    for file in base {
        for (name, t) in candle_core::safetensors::load(file, &Device::Cpu)? {
            let t = match trained.get(&name) {
                Some(var) => var.as_tensor().to_dtype(t.dtype())?,
                None => t,
            };
            tensors.insert(name, t);
        }
    }
    for (name, var) in trained.iter() {
        tensors.entry(name.clone()).or_insert_with(|| var.as_tensor().clone());
    }
    candle_core::safetensors::save(&tensors, path).map_err(|e| Error::model_file(path, e))
}
