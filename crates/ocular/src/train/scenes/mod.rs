//! A procedural scene dataset for training and evaluating a small vision-language model, in
//! the spirit of CLEVR (Johnson et al., 2017, "CLEVR: A Diagnostic Dataset for Compositional
//! Language and Elementary Visual Reasoning") and Sort-of-CLEVR (Santoro et al., 2017, "A simple
//! neural network module for relational reasoning"): flat 2-D shapes on plain or lightly
//! textured canvases, with questions whose single right answer is computed from the scene.
//!
//! Seven tasks (captioning, attributes, counting, relations, grounding in Qwen2-VL's box format,
//! two-image comparison, motion in short videos). Questions come in many phrasings; answers are
//! canonical strings, so evaluation is exact match ([`answers_match`]). Everything is driven by
//! one seeded PRNG of our own, so a seed names the same dataset on every platform.
//!
//! ```no_run
//! use ocular::train::scenes::{Generator, SceneConfig, Task};
//! let mut gen = Generator::new(7, SceneConfig::default());
//! let ex = gen.example(Task::Relation);
//! println!("{} -> {}", ex.question, ex.answer);
//! ```

mod clip;
mod layout;
mod phrasing;
mod questions;
mod render;
#[cfg(test)]
mod task_tests;
mod tasks;
#[cfg(test)]
mod tests;
mod vocab;

use ::image::RgbImage;
use serde::{Deserialize, Serialize};

pub use crate::rng::Rng;
pub use clip::moving_clip;
pub use layout::{relation_answer, scene, Object, Relation, Scene};
pub use questions::caption_text;
pub use render::{Background, StripeDir};
pub use tasks::Generator;
pub use vocab::{Colour, Direction, Shape, Size};

/// What an example asks. Serialized names ("caption", "multi_image", ...) are the task names
/// evaluation reports use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Caption,
    Attribute,
    Count,
    Relation,
    Grounding,
    MultiImage,
    Video,
}

impl Task {
    pub const ALL: [Task; 7] =
        [Task::Caption, Task::Attribute, Task::Count, Task::Relation, Task::Grounding, Task::MultiImage, Task::Video];

    /// The serialized name.
    pub fn name(self) -> &'static str {
        match self {
            Task::Caption => "caption",
            Task::Attribute => "attribute",
            Task::Count => "count",
            Task::Relation => "relation",
            Task::Grounding => "grounding",
            Task::MultiImage => "multi_image",
            Task::Video => "video",
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One instruction example: media, a question, its canonical answer.
#[derive(Debug, Clone)]
pub struct Example {
    pub kind: Task,
    /// One image, or two for [`Task::MultiImage`]; empty for [`Task::Video`].
    pub images: Vec<RgbImage>,
    /// The frames of a [`Task::Video`] example, all the same size.
    pub video: Option<Vec<RgbImage>>,
    pub question: String,
    pub answer: String,
    /// For [`Task::Grounding`]: the object's tight box `[x1, y1, x2, y2]` in pixels.
    pub target_box: Option<[f32; 4]>,
    /// The boxes (pixels) of the objects a one-image answer is read from: the object asked
    /// about, those counted, a relation's anchor and answer, the boxed object. Empty where no
    /// object is (captions, absent objects, comparisons, videos). `[optim] pointer_objects`
    /// teaches the answer to look there (`train::pointer`).
    pub focus: Vec<[f32; 4]>,
    /// The scenes `images` show, in order (empty for a video): what the question steps'
    /// inventory labels are read from (`train::inventory`).
    pub scenes: Vec<Scene>,
}

impl Example {
    /// An answer about objects the scene lacks: "no" to "is there a red circle?", "0" to "how
    /// many stars?". Its focus is empty because nothing matches, not because it is about no
    /// object (as a caption's is).
    pub fn about_absent(&self) -> bool {
        matches!(self.kind, Task::Attribute | Task::Count) && self.images.len() == 1 && self.focus.is_empty()
    }
}

/// Knobs of the scene distribution. Missing fields take the defaults when deserialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SceneConfig {
    /// Canvas width and height are each drawn from `min_side..=max_side` pixels.
    pub min_side: u32,
    pub max_side: u32,
    /// Objects per scene. Tasks that need more (relations need three) raise the minimum; a
    /// crowded small canvas may hold fewer than drawn.
    pub min_objects: usize,
    pub max_objects: usize,
    /// Chance of a textured (noise, stripes, checker, gradient) rather than plain background.
    pub texture_prob: f64,
    /// Frames per video.
    pub min_frames: usize,
    pub max_frames: usize,
    /// Tasks that training draws (all when empty); evaluation asks every task regardless.
    pub tasks: Vec<Task>,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            min_side: 112,
            max_side: 448,
            min_objects: 1,
            max_objects: 6,
            texture_prob: 0.6,
            min_frames: 4,
            max_frames: 8,
            tasks: Vec::new(),
        }
    }
}

impl SceneConfig {
    /// Checks the ranges the generator relies on.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Invalid(format!("scene config: {m}")));
        if !(96 <= self.min_side && self.min_side <= self.max_side && self.max_side <= 4096) {
            return bad(format!("sides {}..={} must satisfy 96 <= min <= max <= 4096", self.min_side, self.max_side));
        }
        if !(1 <= self.min_objects && self.min_objects <= self.max_objects && self.max_objects <= 8) {
            return bad(format!(
                "objects {}..={} must satisfy 1 <= min <= max <= 8",
                self.min_objects, self.max_objects
            ));
        }
        if !(2 <= self.min_frames && self.min_frames <= self.max_frames && self.max_frames <= 64) {
            return bad(format!("frames {}..={} must satisfy 2 <= min <= max <= 64", self.min_frames, self.max_frames));
        }
        if !(0.0..=1.0).contains(&self.texture_prob) {
            return bad(format!("texture_prob {} must lie in [0, 1]", self.texture_prob));
        }
        Ok(())
    }
}

/// Whether a model's answer counts as right. Both sides are trimmed, lowercased and stripped
/// of one final full stop, then compared exactly. Grounding answers that parse as boxes match
/// when the phrases agree (ignoring a leading "the") and the boxes overlap with IoU >= 0.5 on
/// the 0-1000 grid, the usual grounding accuracy threshold.
pub fn answers_match(task: Task, predicted: &str, expected: &str) -> bool {
    let norm = normalized_answer;
    if task == Task::Grounding {
        if let (Some((pp, pb)), Some((ep, eb))) = (parse_box_answer(predicted), parse_box_answer(expected)) {
            let phrase = |s: &str| norm(s).trim_start_matches("the ").to_string();
            return phrase(&pp) == phrase(&ep) && iou(pb.map(|v| v as f32), eb.map(|v| v as f32)) >= 0.5;
        }
    }
    norm(predicted) == norm(expected)
}

/// An answer as exact match compares it: trimmed, lower-cased, without a final full stop.
pub fn normalized_answer(s: &str) -> String {
    let s = s.trim().to_lowercase();
    s.strip_suffix('.').unwrap_or(&s).trim().to_string()
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes; 0 when either is empty.
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let inter = area([a[0].max(b[0]), a[1].max(b[1]), a[2].min(b[2]), a[3].min(b[3])]);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// A pixel coordinate on Qwen2-VL's 0-1000 grid: `round(px / extent * 1000)`.
pub fn to_grid(px: f32, extent: u32) -> u32 {
    (px as f64 / extent as f64 * 1000.0).round().clamp(0.0, 1000.0) as u32
}

/// Qwen2-VL's grounding format for `phrase` boxed by the pixel box `bbox` in a `width` x
/// `height` image: `<|object_ref_start|>the yellow star<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`.
pub fn box_answer(phrase: &str, bbox: [f32; 4], width: u32, height: u32) -> String {
    let [x1, y1, x2, y2] =
        [to_grid(bbox[0], width), to_grid(bbox[1], height), to_grid(bbox[2], width), to_grid(bbox[3], height)];
    format!("<|object_ref_start|>{phrase}<|object_ref_end|><|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>")
}

/// Reads back [`box_answer`]'s format: the phrase (empty when the reference part is absent) and
/// the grid box. Spaces around numbers are tolerated, anything else is `None`.
pub fn parse_box_answer(text: &str) -> Option<(String, [u32; 4])> {
    let text = text.trim();
    let (phrase, rest) = match text.strip_prefix("<|object_ref_start|>") {
        Some(r) => {
            let (p, rest) = r.split_once("<|object_ref_end|>")?;
            (p.trim().to_string(), rest)
        }
        None => (String::new(), text),
    };
    let inner = rest.trim().strip_prefix("<|box_start|>")?.strip_suffix("<|box_end|>")?;
    let nums: Vec<u32> = inner
        .split(['(', ')', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    let shape_ok = inner.matches('(').count() == 2 && inner.matches(')').count() == 2;
    (shape_ok && nums.len() == 4).then(|| (phrase, [nums[0], nums[1], nums[2], nums[3]]))
}

#[cfg(test)]
mod api_tests {
    use super::*;

    #[test]
    fn box_answers_round_trip_and_match() {
        let a = box_answer("the yellow star", [10.0, 20.5, 55.2, 80.0], 200, 100);
        assert_eq!(
            a,
            "<|object_ref_start|>the yellow star<|object_ref_end|><|box_start|>(50,205),(276,800)<|box_end|>"
        );
        assert_eq!(parse_box_answer(&a), Some(("the yellow star".to_string(), [50, 205, 276, 800])));
        assert_eq!(parse_box_answer("<|box_start|>( 1, 2),(3 ,4)<|box_end|>"), Some((String::new(), [1, 2, 3, 4])));
        assert_eq!(parse_box_answer("<|box_start|>(1,2),(3)<|box_end|>"), None);
        assert_eq!(parse_box_answer("(1,2),(3,4)"), None);
        let near = "<|object_ref_start|>yellow star<|object_ref_end|><|box_start|>(55,210),(280,790)<|box_end|>";
        assert!(answers_match(Task::Grounding, near, &a));
        let far = "<|object_ref_start|>the yellow star<|object_ref_end|><|box_start|>(300,205),(500,800)<|box_end|>";
        assert!(!answers_match(Task::Grounding, far, &a));
        let other = near.replace("yellow", "red");
        assert!(!answers_match(Task::Grounding, &other, &a));
    }

    #[test]
    fn text_answers_match_after_normalising() {
        assert!(answers_match(Task::Count, " 3. ", "3"));
        assert!(answers_match(Task::Attribute, "Blue", "blue"));
        assert!(answers_match(Task::Caption, "a small red circle", "A small red circle."));
        assert!(!answers_match(Task::Count, "three", "3"));
        assert!(!answers_match(Task::Relation, "blue", "blue square"));
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]), 50.0 / 150.0);
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]), 0.0);
        assert_eq!(iou([0.0, 0.0, 0.0, 10.0], [0.0, 0.0, 0.0, 10.0]), 0.0);
    }

    #[test]
    fn task_names_serialize_as_documented() {
        for t in Task::ALL {
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{}\"", t.name()));
        }
        let cfg: SceneConfig = serde_json::from_str(r#"{"max_objects": 4}"#).unwrap();
        assert_eq!(cfg, SceneConfig { max_objects: 4, ..SceneConfig::default() });
        let err = SceneConfig { min_side: 50, ..SceneConfig::default() }.validate().unwrap_err();
        assert_eq!(err.to_string(), "scene config: sides 50..=448 must satisfy 96 <= min <= max <= 4096");
    }
}
