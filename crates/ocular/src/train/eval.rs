//! Evaluation on the scenes suite: a seeded set of examples spread evenly over the seven tasks,
//! answered greedily, scored by exact match ([`answers_match`]) and, for grounding, by the IoU of
//! the predicted box with the true one (accuracy at IoU >= 0.5, the referring-expression
//! convention of RefCOCO, Yu et al., 2016).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::parallel;
pub use super::parallel::pool;
use super::scenes::{answers_match, iou, Example, Generator, SceneConfig, Task};
use crate::error::{Error, Result};
use crate::generate::SamplingParams;
use crate::ground::{self, Coords, Grounding};
use crate::image::Video;
use crate::models::Media;
use crate::pipeline::{GenerateOptions, Pipeline};
use crate::prompt::Message;

/// Most new tokens per answer: the longest canonical answers (six-object captions, grounding
/// boxes) take about forty in Qwen2's tokenizer.
pub const MAX_NEW_TOKENS: usize = 64;

/// What to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suite {
    /// Every task of [`super::scenes`], default scene config.
    Scenes,
}

/// Scores of one run. JSON: `{"tasks": {"caption": {"n": .., "accuracy": ..}, ..},
/// "grounding": {"acc_iou50": .., "mean_iou": ..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Every task with at least one example, in [`Task::ALL`] order.
    pub tasks: BTreeMap<Task, TaskScore>,
    /// Box quality over the grounding examples (0 when there were none).
    pub grounding: GroundingScore,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TaskScore {
    pub n: usize,
    /// Share of answers that [`answers_match`] the canonical one.
    pub accuracy: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroundingScore {
    /// Share of predicted boxes with IoU >= 0.5 against the true box, in image pixels.
    pub acc_iou50: f64,
    /// Mean IoU; a missing or unreadable box counts as 0.
    pub mean_iou: f64,
}

/// What the model said about one example.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The answer text; for grounding with special tokens kept, since Qwen2-VL's box markers
    /// are special tokens.
    pub answer: String,
    /// For grounding: the answer's first box in pixels of the example's image.
    pub bbox: Option<[f32; 4]>,
}

/// One answer as [`evaluate`] scored it, passed to its caller as it comes.
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    /// Answers so far, this one included, and in all.
    pub done: usize,
    pub total: usize,
    pub example: &'a Example,
    pub prediction: &'a Prediction,
    /// Whether the answer [`answers_match`] the canonical one.
    pub correct: bool,
    /// For grounding: the predicted box's IoU with the true one (0 without a box).
    pub iou: Option<f64>,
}

/// Asks `pipeline` about `n` examples of `suite` made from `seed`, spread evenly over the tasks
/// (all of [`Task::ALL`], but the video task for a model that takes no videos), the remainder to
/// the first. Each task draws from its own stream, so a larger `n` with the same seed extends a
/// smaller one. With `pool`, its threads answer several examples at once (best with candle's
/// per-operation threads off, as `ocular eval` sets them); answers are scored, and passed to
/// `each`, in the same order either way.
pub fn evaluate(
    pipeline: &Pipeline,
    suite: Suite,
    n: usize,
    seed: u64,
    pool: Option<&rayon::ThreadPool>,
    mut each: impl FnMut(&Scored),
) -> Result<Report> {
    let Suite::Scenes = suite;
    // Indices into Task::ALL, which seed each task's stream whatever the others.
    let tasks: Vec<usize> =
        (0..Task::ALL.len()).filter(|&i| Task::ALL[i] != Task::Video || pipeline.model.takes_video()).collect();
    let counts = examples_per_task(n, tasks.len())?;
    let mut gens: Vec<Generator> =
        tasks.iter().map(|&i| Generator::new(task_seed(seed, i), SceneConfig::default())).collect();
    // Round-robin over the tasks, so that an interrupted run has seen every task alike.
    let counts = &counts;
    let order: Vec<usize> =
        (0..counts[0]).flat_map(|round| (0..tasks.len()).filter(move |&j| round < counts[j])).collect();
    // A few examples per thread at a time, so that long answers and short ones even out.
    let chunk = pool.map_or(1, |p| 4 * p.current_num_threads());
    let mut tally = Tally::default();
    for chunk in order.chunks(chunk) {
        let examples: Vec<Example> = chunk.iter().map(|&j| gens[j].example(Task::ALL[tasks[j]])).collect();
        let predictions = parallel::map(pool, &examples, &|e: &Example| predict(pipeline, e))?;
        for (example, prediction) in examples.iter().zip(&predictions) {
            let (correct, iou) = tally.add(example, prediction);
            each(&Scored { done: tally.total(), total: n, example, prediction, correct, iou });
        }
    }
    Ok(tally.report())
}

/// Scores hand-made or recorded predictions, one per example, as [`evaluate`] does.
pub fn score(examples: &[Example], predictions: &[Prediction]) -> Report {
    assert_eq!(examples.len(), predictions.len(), "one prediction per example");
    let mut tally = Tally::default();
    for (e, p) in examples.iter().zip(predictions) {
        tally.add(e, p);
    }
    tally.report()
}

/// The greedy answer of `pipeline` to `example`, its box read in the family's convention.
pub fn predict(pipeline: &Pipeline, example: &Example) -> Result<Prediction> {
    let videos: Vec<Video> = example.video.iter().map(|frames| scene_video(frames)).collect();
    let message = Message::user_with_media(&example.question, example.images.len(), videos.len());
    let media = Media { images: example.images.clone(), videos, ..Default::default() };
    let prepared = pipeline.prepare_chat(&[message], &media)?;
    let options = GenerateOptions { sampling: SamplingParams::greedy(), max_new_tokens: MAX_NEW_TOKENS, stop: vec![] };
    let generation = pipeline.generate(&prepared, &options, &mut |_| {})?;
    if example.kind != Task::Grounding {
        return Ok(Prediction { answer: generation.text, bbox: None });
    }
    let answer = pipeline.model.tokenizer().decode(&generation.tokens, false)?;
    let size = example.images[0].dimensions();
    let bbox = read_box(pipeline.boxes(&answer, &prepared, size), &answer, size);
    Ok(Prediction { answer, bbox })
}

/// The first box found, in pixels; families without a box convention of their own are read
/// in the dataset's (Qwen2-VL's 0-1000 grid).
fn read_box(found: Option<Grounding>, answer: &str, size: (u32, u32)) -> Option<[f32; 4]> {
    let found = found.unwrap_or_else(|| ground::parse(answer, Coords::Grid1000, size));
    found.boxes.first().map(|d| d.bbox)
}

/// A scene video as the model's video input, at 2 frames per second like a folder of frames.
fn scene_video(frames: &[::image::RgbImage]) -> Video {
    let n = frames.len();
    Video {
        frames: frames.iter().enumerate().map(|(i, f)| (format!("scene frame {i}"), f.clone())).collect(),
        indices: (0..n).collect(),
        total_frames: n,
        source_fps: 2.0,
        fps: 2.0,
    }
}

/// Examples per task when `n` are spread over `k` tasks, the remainder to the first; an error
/// when `n` leaves a task without any.
pub fn examples_per_task(n: usize, k: usize) -> Result<Vec<usize>> {
    if n < k {
        return Err(Error::Invalid(format!("the scenes suite needs at least {k} examples (one per task), got {n}")));
    }
    Ok((0..k).map(|i| n / k + usize::from(i < n % k)).collect())
}

/// Each task's generator seed. Its high 32 bits are never all zero for a seed below 2^32, so
/// evaluation never replays a generator a training run seeded with such a number.
fn task_seed(seed: u64, task: usize) -> u64 {
    // Hashed under a tag of its own, so evaluation never replays the generators training draws
    // from (the trainer seeds them with seed * golden ratio + step).
    let mut state = (seed ^ 0x6576_616C_5F73_6565).wrapping_add((task as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    crate::rng::splitmix64(&mut state)
}

#[derive(Default)]
struct Tally {
    /// (examples, right answers) per task.
    tasks: BTreeMap<Task, (usize, usize)>,
    boxes: usize,
    hits: usize,
    iou_sum: f64,
}

impl Tally {
    /// Counts one answer; returns whether it was right and, for a box, its IoU.
    fn add(&mut self, example: &Example, prediction: &Prediction) -> (bool, Option<f64>) {
        let entry = self.tasks.entry(example.kind).or_default();
        let correct = answers_match(example.kind, &prediction.answer, &example.answer);
        entry.0 += 1;
        entry.1 += usize::from(correct);
        let overlap = example.target_box.map(|target| prediction.bbox.map_or(0.0, |b| f64::from(iou(b, target))));
        if let Some(overlap) = overlap {
            self.boxes += 1;
            self.hits += usize::from(overlap >= 0.5);
            self.iou_sum += overlap;
        }
        (correct, overlap)
    }

    fn total(&self) -> usize {
        self.tasks.values().map(|&(n, _)| n).sum()
    }

    fn report(&self) -> Report {
        let ratio = |a: f64, b: usize| if b == 0 { 0.0 } else { a / b as f64 };
        Report {
            tasks: self
                .tasks
                .iter()
                .map(|(&t, &(n, right))| (t, TaskScore { n, accuracy: ratio(right as f64, n) }))
                .collect(),
            grounding: GroundingScore {
                acc_iou50: ratio(self.hits as f64, self.boxes),
                mean_iou: ratio(self.iou_sum, self.boxes),
            },
        }
    }
}

impl Report {
    /// The report as an aligned table, for people.
    pub fn table(&self) -> String {
        let mut out = format!("{:<12} {:>6} {:>9}\n", "task", "n", "accuracy");
        for (task, s) in &self.tasks {
            let _ = writeln!(out, "{:<12} {:>6} {:>8.1}%", task.name(), s.n, 100.0 * s.accuracy);
        }
        let n: usize = self.tasks.values().map(|s| s.n).sum();
        let right: f64 = self.tasks.values().map(|s| s.accuracy * s.n as f64).sum();
        let all = if n == 0 { 0.0 } else { right / n as f64 };
        let _ = writeln!(out, "{:<12} {:>6} {:>8.1}%", "all", n, 100.0 * all);
        let g = &self.grounding;
        let _ = write!(out, "grounding boxes: acc@IoU>=0.5 {:.1}%, mean IoU {:.3}", 100.0 * g.acc_iou50, g.mean_iou);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadOptions;
    use crate::train::scenes::box_answer;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/qwen2_vl/image_upscaled/model");

    fn example(kind: Task, answer: &str, target_box: Option<[f32; 4]>) -> Example {
        let images = vec![::image::RgbImage::new(200, 100)];
        Example {
            kind,
            images,
            video: None,
            question: "?".into(),
            answer: answer.into(),
            target_box,
            focus: vec![],
            scenes: vec![],
        }
    }

    fn said(answer: &str) -> Prediction {
        Prediction { answer: answer.into(), bbox: read_box(None, answer, (200, 100)) }
    }

    #[test]
    fn scores_hand_made_predictions_exactly() {
        // Grid boxes on a 200x100 image: (0,0)-(50,100) is [0, 0, 10, 10] in pixels.
        let target = [0.0, 0.0, 10.0, 10.0];
        let truth = box_answer("the red circle", target, 200, 100);
        let examples = vec![
            example(Task::Count, "3", None),
            example(Task::Count, "2", None),
            example(Task::Caption, "A small red circle.", None),
            example(Task::Grounding, &truth, Some(target)),
            example(Task::Grounding, &truth, Some(target)),
            example(Task::Grounding, &truth, Some(target)),
        ];
        let predictions = vec![
            said(" 3."),
            said("two"),
            said("a small red circle"),
            said(&truth),
            // Half the box's width further right: IoU 5 / 15.
            said("<|object_ref_start|>the red circle<|object_ref_end|><|box_start|>(25,0),(75,100)<|box_end|>"),
            said("<|object_ref_start|>the red circle<|object_ref_end|><|box_start|>(25,0),(75<|box_end|>"),
        ];
        assert_eq!(predictions[4].bbox, Some([5.0, 0.0, 15.0, 10.0]));
        assert_eq!(predictions[5].bbox, None);
        let report = score(&examples, &predictions);
        let tasks: Vec<(Task, TaskScore)> = report.tasks.iter().map(|(&t, &s)| (t, s)).collect();
        assert_eq!(
            tasks,
            [
                (Task::Caption, TaskScore { n: 1, accuracy: 1.0 }),
                (Task::Count, TaskScore { n: 2, accuracy: 0.5 }),
                (Task::Grounding, TaskScore { n: 3, accuracy: 1.0 / 3.0 }),
            ]
        );
        assert_eq!(report.grounding.acc_iou50, 1.0 / 3.0);
        assert!((report.grounding.mean_iou - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-6, "{:?}", report.grounding);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["tasks"]["count"], serde_json::json!({"n": 2, "accuracy": 0.5}));
        assert_eq!(json.as_object().unwrap().len(), 2);
        assert_eq!(json["grounding"].as_object().unwrap().len(), 2);
        let table = report.table();
        assert!(table.contains("count             2     50.0%"), "{table}");
        assert!(table.contains("all               6     50.0%"), "{table}");
        assert!(table.ends_with("acc@IoU>=0.5 33.3%, mean IoU 0.444"), "{table}");
    }

    #[test]
    fn an_oracle_scores_perfectly() {
        let mut gen = Generator::new(5, SceneConfig::default());
        let examples: Vec<Example> = (0..3).flat_map(|_| Task::ALL.map(|t| gen.example(t))).collect();
        let predictions: Vec<Prediction> = examples
            .iter()
            .map(|e| {
                let size = e.images.first().map_or((0, 0), |i| i.dimensions());
                Prediction { answer: e.answer.clone(), bbox: read_box(None, &e.answer, size) }
            })
            .collect();
        let report = score(&examples, &predictions);
        assert!(report.tasks.values().all(|s| s.n == 3 && s.accuracy == 1.0), "{report:?}");
        assert_eq!(report.tasks.len(), 7);
        // The answer's box is on the 0-1000 grid, so it comes back within rounding of the truth.
        assert_eq!(report.grounding.acc_iou50, 1.0);
        assert!(report.grounding.mean_iou > 0.9, "{:?}", report.grounding);
    }

    #[test]
    fn box_markers_survive_decoding_with_special_tokens_kept() {
        // Qwen2-VL's tokenizers mark the box tokens special: the usual decode drops them.
        let pipeline = Pipeline::load(FIXTURE, &LoadOptions::default()).unwrap();
        let truth = box_answer("the red circle", [0.0, 0.0, 10.0, 10.0], 200, 100);
        let tok = pipeline.model.tokenizer();
        let ids = tok.encode(&truth, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), truth);
        assert_eq!(tok.decode(&ids, true).unwrap(), "the red circle(0,0),(50,100)");
    }

    #[test]
    fn splits_n_over_tasks_and_refuses_too_few() {
        assert_eq!(examples_per_task(7, 7).unwrap(), [1; 7]);
        assert_eq!(examples_per_task(17, 7).unwrap(), [3, 3, 3, 2, 2, 2, 2]);
        let err = examples_per_task(6, 7).unwrap_err();
        assert_eq!(err.to_string(), "the scenes suite needs at least 7 examples (one per task), got 6");
    }

    #[test]
    fn evaluates_the_fixture_model_deterministically() {
        let pipeline = Pipeline::load(FIXTURE, &LoadOptions::default()).unwrap();
        let mut calls = Vec::new();
        let report = evaluate(&pipeline, Suite::Scenes, 9, 1, None, |s| {
            calls.push((s.done, s.total, s.example.kind, s.correct, s.iou.is_some()));
        })
        .unwrap();
        let kinds = [Task::Caption, Task::Attribute, Task::Count, Task::Relation, Task::Grounding, Task::MultiImage];
        let kinds = [&kinds[..], &[Task::Video, Task::Caption, Task::Attribute]].concat();
        let seen: Vec<(usize, Task, bool)> = calls.iter().map(|c| (c.0, c.2, c.4)).collect();
        let expected: Vec<(usize, Task, bool)> =
            kinds.iter().enumerate().map(|(i, &k)| (i + 1, k, k == Task::Grounding)).collect();
        assert_eq!(seen, expected);
        assert!(calls.iter().all(|c| c.1 == 9));
        // What each answer was scored agrees with the report.
        let right = |t: Task| calls.iter().filter(|c| c.2 == t && c.3).count() as f64;
        assert!(report.tasks.iter().all(|(&t, s)| s.accuracy * s.n as f64 == right(t)), "{report:?}");
        let ns: Vec<usize> = Task::ALL.iter().map(|t| report.tasks[t].n).collect();
        assert_eq!(ns, [2, 2, 1, 1, 1, 1, 1]);
        let g = report.grounding;
        for v in report.tasks.values().map(|s| s.accuracy).chain([g.acc_iou50, g.mean_iou]) {
            assert!((0.0..=1.0).contains(&v), "{report:?}");
        }
        // Two threads answering at once score the same answers, passed on in the same order.
        let pool = parallel::pool(2).unwrap();
        let answers = |pool: Option<&rayon::ThreadPool>| {
            let mut seen = Vec::new();
            let report = evaluate(&pipeline, Suite::Scenes, 9, 1, pool, |s| {
                seen.push((s.done, s.example.question.clone(), s.prediction.answer.clone()))
            })
            .unwrap();
            (report, seen)
        };
        let (one, two) = (answers(None), answers(pool.as_ref()));
        assert_eq!(one, two);
        assert_eq!(two.0, report);
        let err = evaluate(&pipeline, Suite::Scenes, 0, 1, None, |_| {}).unwrap_err();
        assert!(err.to_string().contains("at least 7 examples"), "{err}");
    }

    /// A model that takes no videos (LLaVA) is asked the six other tasks, each the same
    /// questions as a model that takes every task is asked.
    #[test]
    fn a_model_without_videos_is_asked_the_other_tasks() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let llava = Pipeline::load(root.join("tests/fixtures/llava/one_image/model"), &LoadOptions::default()).unwrap();
        let mut questions = Vec::new();
        let report =
            evaluate(&llava, Suite::Scenes, 7, 3, None, |s| questions.push(s.example.question.clone())).unwrap();
        let six: Vec<Task> = Task::ALL.into_iter().filter(|&t| t != Task::Video).collect();
        assert_eq!(report.tasks.keys().copied().collect::<Vec<_>>(), six);
        assert_eq!(report.tasks.values().map(|s| s.n).collect::<Vec<_>>(), [2, 1, 1, 1, 1, 1]);
        let qwen = Pipeline::load(FIXTURE, &LoadOptions::default()).unwrap();
        let mut all = Vec::new();
        evaluate(&qwen, Suite::Scenes, 7, 3, None, |s| all.push(s.example.question.clone())).unwrap();
        assert_eq!(questions[..6], all[..6]);
    }
}
