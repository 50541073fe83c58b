//! Scenes into instruction examples: a deterministic stream of single examples or of groups of
//! questions about the same media. The questions themselves are `questions.rs`'s; examples are
//! built from scene data and rendered only at the end.

use super::clip::{render_frames, video};
use super::layout::Scene;
use super::phrasing as say;
use super::questions::{
    ask_attribute, ask_caption, ask_count, ask_grounding, ask_multi_image, ask_relation, attribute, caption, count,
    grounding, multi_image, relation, scene_needing, scene_pair, AskFn, Asked,
};
use super::{Example, SceneConfig, Task};
use crate::rng::Rng;

/// Fixed mixture for [`Generator::mixed`], in [`Task::ALL`] order: the spatial tasks weigh
/// most because they are what a small model learns last.
const MIX_WEIGHTS: [u32; 7] = [2, 3, 2, 3, 3, 1, 1];

/// A deterministic stream of examples: the same seed and config give the same examples, in
/// the same order, on every platform.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: Rng,
    config: SceneConfig,
}

impl Generator {
    /// # Panics
    /// If `config` is invalid; call [`SceneConfig::validate`] first to get the reason as an error.
    pub fn new(seed: u64, config: SceneConfig) -> Self {
        if let Err(e) = config.validate() {
            panic!("{e}");
        }
        Self { rng: Rng::seed_from_u64(seed), config }
    }

    pub fn config(&self) -> &SceneConfig {
        &self.config
    }

    /// The next example of `task`.
    pub fn example(&mut self, task: Task) -> Example {
        build(&mut self.rng, &self.config, task).render()
    }

    /// The next example of a task drawn with fixed weights (caption 2, attribute 3, count 2,
    /// relation 3, grounding 3, multi-image 1, video 1).
    pub fn mixed(&mut self) -> Example {
        let task = Task::ALL[self.rng.weighted(&self.weights())];
        self.example(task)
    }
}

impl Generator {
    /// Up to `questions` examples about the same media (one scene, a pair, or one video), for
    /// training: the media is encoded once and every answer is scored (see `train::batch`).
    /// Tasks and scenes follow the same builders as [`Generator::example`].
    pub fn group(&mut self, questions: usize) -> Vec<Example> {
        // A scene may offer none of the allowed questions (no attribute asked in three tries,
        // say); the next scene will. A config that never yields one ends with an empty group,
        // which the trainer reports, rather than drawing forever.
        for _ in 0..1000 {
            let group = self.try_group(questions);
            if !group.is_empty() {
                return group;
            }
        }
        Vec::new()
    }

    fn try_group(&mut self, questions: usize) -> Vec<Example> {
        let weights = self.weights();
        let group_weights = [
            if weights[..5].iter().any(|&w| w > 0) { GROUP_WEIGHTS[0] } else { 0 },
            if weights[5] > 0 { GROUP_WEIGHTS[1] } else { 0 },
            if weights[6] > 0 { GROUP_WEIGHTS[2] } else { 0 },
        ];
        let (rng, config) = (&mut self.rng, &self.config);
        let built = match rng.weighted(&group_weights) {
            0 => {
                let need = if rng.chance(0.5) { 3 } else { 1 };
                let scene = scene_needing(rng, config, need);
                let asks: [(Task, AskFn); 5] = [
                    (Task::Caption, ask_caption),
                    (Task::Attribute, ask_attribute),
                    (Task::Count, ask_count),
                    (Task::Relation, ask_relation),
                    (Task::Grounding, ask_grounding),
                ];
                let mut out: Vec<Built> = Vec::new();
                for _ in 0..questions * 3 {
                    let (task, ask) = asks[rng.weighted(&weights[..5])];
                    if let Some(q) = ask(rng, &scene) {
                        out.push(Built::asked(task, vec![scene.clone()], q));
                    }
                    dedup_questions(&mut out);
                    if out.len() == questions {
                        break;
                    }
                }
                out
            }
            1 => {
                let (a, b) = scene_pair(rng, config);
                let mut out: Vec<Built> = Vec::new();
                for _ in 0..questions * 3 {
                    let (kind, want_yes) = (rng.weighted(&[5, 2, 3]), rng.chance(0.5));
                    if let Some(q) = ask_multi_image(rng, &a, &b, kind, want_yes) {
                        out.push(Built::new(Task::MultiImage, vec![a.clone(), b.clone()], q.question, q.answer));
                    }
                    dedup_questions(&mut out);
                    if out.len() == questions.min(3) {
                        break;
                    }
                }
                out
            }
            _ => {
                // The same motion asked in two phrasings; the mover is the first object.
                let first = video(rng, config);
                let mover = first.scenes[0].objects[0].name();
                let again = Built { question: say::direction(rng, &mover), ..first.clone() };
                let mut out = vec![first, again];
                dedup_questions(&mut out);
                out
            }
        };
        render_group(built)
    }
}

impl Generator {
    /// The task mixture: [`MIX_WEIGHTS`], limited to `config.tasks` when that names any.
    fn weights(&self) -> [u32; 7] {
        let allowed = |t: Task| self.config.tasks.is_empty() || self.config.tasks.contains(&t);
        std::array::from_fn(|i| if allowed(Task::ALL[i]) { MIX_WEIGHTS[i] } else { 0 })
    }
}

/// Group kinds: one scene, a pair of scenes, a video.
const GROUP_WEIGHTS: [u32; 3] = [10, 2, 2];

fn dedup_questions(built: &mut Vec<Built>) {
    let mut seen = std::collections::HashSet::new();
    built.retain(|b| seen.insert(b.question.clone()));
}

/// Renders the shared media once.
fn render_group(built: Vec<Built>) -> Vec<Example> {
    let Some(first) = built.first() else { return Vec::new() };
    let media = first.clone().render();
    built
        .into_iter()
        .map(|b| Example {
            question: b.question,
            answer: b.answer,
            target_box: b.target_box,
            focus: b.focus,
            kind: b.kind,
            ..media.clone()
        })
        .collect()
}

/// Endless: `generator.take(n)` is a dataset of `n` mixed examples.
impl Iterator for Generator {
    type Item = Example;
    fn next(&mut self) -> Option<Example> {
        Some(self.mixed())
    }
}

/// An example before rendering, with the scenes it was asked about (tests recompute answers
/// from them). For video, `scenes` are the frames.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub kind: Task,
    pub scenes: Vec<Scene>,
    pub question: String,
    pub answer: String,
    pub target_box: Option<[f32; 4]>,
    pub focus: Vec<[f32; 4]>,
}

impl Built {
    pub(super) fn new(kind: Task, scenes: Vec<Scene>, question: String, answer: String) -> Self {
        Self { kind, scenes, question, answer, target_box: None, focus: Vec::new() }
    }

    /// A question [`super::questions`] asked about `scenes`, with its boxes.
    pub(super) fn asked(kind: Task, scenes: Vec<Scene>, q: Asked) -> Self {
        Self { target_box: q.target_box, focus: q.focus, ..Self::new(kind, scenes, q.question, q.answer) }
    }

    pub fn render(self) -> Example {
        let (images, video, scenes) = if self.kind == Task::Video {
            (Vec::new(), Some(render_frames(&self.scenes)), Vec::new())
        } else {
            (self.scenes.iter().map(Scene::render).collect(), None, self.scenes)
        };
        Example {
            kind: self.kind,
            images,
            video,
            question: self.question,
            answer: self.answer,
            target_box: self.target_box,
            focus: self.focus,
            scenes,
        }
    }
}

pub(crate) fn build(rng: &mut Rng, config: &SceneConfig, task: Task) -> Built {
    match task {
        Task::Caption => caption(rng, config),
        Task::Attribute => attribute(rng, config),
        Task::Count => count(rng, config),
        Task::Relation => relation(rng, config),
        Task::Grounding => grounding(rng, config),
        Task::MultiImage => multi_image(rng, config),
        Task::Video => video(rng, config),
    }
}
