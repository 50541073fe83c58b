//! Weights from safetensors files, memory-mapped. Every file is validated (header, offsets,
//! length) before use, so a truncated or corrupt download is reported by name instead of
//! surfacing later as a confusing tensor error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};

/// The tensors a checkpoint holds: name -> shape, over all shards.
pub struct WeightIndex {
    pub files: Vec<PathBuf>,
    pub shapes: BTreeMap<String, Vec<usize>>,
}

impl WeightIndex {
    pub fn read(files: Vec<PathBuf>) -> Result<Self> {
        let mut shapes = BTreeMap::new();
        for path in &files {
            let file = std::fs::File::open(path).map_err(|e| Error::model_file(path, e))?;
            // SAFETY: the map is read-only and dropped before this function returns; a file
            // changed underneath it could only yield wrong bytes, which validation reports.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::model_file(path, e))?;
            let st = safetensors::SafeTensors::deserialize(&mmap).map_err(|e| {
                Error::model_file(path, format!("not a valid safetensors file (truncated or corrupt?): {e}"))
            })?;
            for (name, view) in st.tensors() {
                shapes.insert(name, view.shape().to_vec());
            }
        }
        Ok(Self { files, shapes })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    /// Number of parameters stored under `prefix`.
    pub fn count_params(&self, prefix: &str) -> usize {
        self.shapes.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    /// A builder that reads (and converts to `dtype`) any tensor on demand, reporting the
    /// elements read so far to `progress` as (done, total).
    pub fn var_builder(
        &self,
        dtype: DType,
        device: &Device,
        progress: Option<Progress>,
    ) -> Result<VarBuilder<'static>> {
        // SAFETY: as above, read-only maps of files validated just before.
        let inner =
            unsafe { candle_core::safetensors::MmapedSafetensors::multi(&self.files) }.map_err(|e| Error::Weights {
                dir: self.files.first().and_then(|f| f.parent()).unwrap_or(Path::new(".")).to_path_buf(),
                message: e.to_string(),
            })?;
        let total = self.shapes.values().map(|s| s.iter().product::<usize>() as u64).sum();
        let backend = Counting { inner, done: AtomicU64::new(0), total, progress };
        Ok(VarBuilder::from_backend(Box::new(backend), dtype, device.clone()))
    }
}

/// Called with (elements loaded, elements stored) as weights are read.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Counts what the model reads, to show loading progress.
struct Counting {
    inner: candle_core::safetensors::MmapedSafetensors,
    done: AtomicU64,
    total: u64,
    progress: Option<Progress>,
}

impl Counting {
    fn counted(&self, t: candle_core::Result<Tensor>) -> candle_core::Result<Tensor> {
        if let (Ok(t), Some(report)) = (&t, &self.progress) {
            let done = self.done.fetch_add(t.elem_count() as u64, Ordering::Relaxed) + t.elem_count() as u64;
            report(done, self.total);
        }
        t
    }
}

impl SimpleBackend for Counting {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.counted(SimpleBackend::get(&self.inner, s, name, h, dtype, dev))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.counted(SimpleBackend::get_unchecked(&self.inner, name, dtype, dev))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        SimpleBackend::contains_tensor(&self.inner, name)
    }
}
