//! What `ocular train` reports as it goes: each step's losses, learning rate and gradient norm,
//! the pace of each stage, and the time left.

pub use super::dense::DenseParts;

/// What the loop reports after each step.
#[derive(Debug, Clone)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: f64,
    /// The dense vision loss's colour and shape parts (see `train::dense`) on steps that
    /// compute it.
    pub dense: Option<DenseParts>,
    /// The position head's loss (see `train::position`) on question steps, when it has one.
    pub position: Option<f32>,
    /// The pointer loss (see `train::pointer`) on question steps whose samples have boxes,
    /// with `optim.pointer_layer`.
    pub pointer: Option<f32>,
    /// The object box head's loss (see `train::object_box`), with `optim.box_layer`.
    pub object_box: Option<f32>,
    /// The inventory head's loss (see `train::inventory`), with `optim.inventory_layer`.
    pub inventory: Option<f32>,
    /// This stage's pace so far.
    pub rate: Rate,
    pub eta_secs: f64,
    /// Mean loss on held-out examples, on the steps that measure it.
    pub eval_loss: Option<f32>,
    /// The user's conversations this step left out, each named with why.
    pub skipped: Vec<String>,
}

/// A stage's pace: the warm-up sees images (scenes and clips) but no text, the question
/// steps are measured in tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    ImagesPerSec(f64),
    TokensPerSec(f64),
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::ImagesPerSec(r) => write!(f, "{r:.1} images/s"),
            Rate::TokensPerSec(r) => write!(f, "{r:.0} tok/s"),
        }
    }
}

/// Seconds left for `left` warm-up and question steps, each stage at its own measured pace
/// (`timed`: steps and seconds so far); a stage not yet timed is guessed at the other's pace.
/// Question steps here take ~2x a warm-up step, so one overall rate would misjudge both.
pub fn eta_secs(left: [usize; 2], timed: [(usize, f64); 2]) -> f64 {
    let pace = |(steps, secs): (usize, f64)| (steps > 0).then(|| secs / steps as f64);
    let paces = [pace(timed[0]).or(pace(timed[1])), pace(timed[1]).or(pace(timed[0]))];
    left.iter().zip(paces).map(|(&n, p)| n as f64 * p.unwrap_or(0.0)).sum()
}
