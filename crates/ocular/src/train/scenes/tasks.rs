//! Scenes into instruction examples: one builder per task, each drawing scenes until it can ask
//! a question with exactly one right answer (CLEVR's rejection of ill-posed questions, Johnson
//! et al., 2017). Builders decide everything from scene data and render only at the end, so
//! rejected scenes cost nothing to draw.

use ::image::RgbImage;

use super::layout::{self, relation_answer, scene_with, Object, Relation, Scene, EDGE};
use super::phrasing as say;
use super::render::{draw_object, random_background, render_background, unit_bbox};
use super::vocab::{Colour, Direction, Shape};
use super::{box_answer, Example, SceneConfig, Task};
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
                        let b = Built::new(task, vec![scene.clone()], q.question, q.answer);
                        out.push(Built { target_box: q.target_box, ..b });
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
}

impl Built {
    fn new(kind: Task, scenes: Vec<Scene>, question: String, answer: String) -> Self {
        Self { kind, scenes, question, answer, target_box: None }
    }

    pub fn render(self) -> Example {
        let (images, video) = if self.kind == Task::Video {
            (Vec::new(), Some(render_frames(&self.scenes)))
        } else {
            (self.scenes.iter().map(Scene::render).collect(), None)
        };
        Example {
            kind: self.kind,
            images,
            video,
            question: self.question,
            answer: self.answer,
            target_box: self.target_box,
        }
    }
}

/// Frames share one background, drawn once.
fn render_frames(frames: &[Scene]) -> Vec<RgbImage> {
    let first = &frames[0];
    let bg = render_background(&first.background, first.width, first.height);
    frames
        .iter()
        .map(|f| {
            let mut img = bg.clone();
            f.objects.iter().for_each(|o| draw_object(&mut img, o));
            img
        })
        .collect()
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

/// A scene with at least `need` objects, whatever the config's minimum.
fn scene_needing(rng: &mut Rng, config: &SceneConfig, need: usize) -> Scene {
    scene_with(rng, config, config.min_objects.max(need), config.max_objects.max(need))
}

/// The canonical caption: objects left to right as "a <size> <colour> <shape>", joined with
/// commas and a final "and", capitalised, with a full stop. "A small red circle, a large blue
/// square and a small yellow star."
pub fn caption_text(scene: &Scene) -> String {
    let mut objects: Vec<&Object> = scene.objects.iter().collect();
    objects.sort_by(|a, b| a.centre[0].total_cmp(&b.centre[0]));
    let parts: Vec<String> =
        objects.iter().map(|o| format!("a {} {} {}", o.size.name(), o.colour.name(), o.shape.name())).collect();
    let body = match parts.split_last() {
        None => "nothing".to_string(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    };
    let mut chars = body.chars();
    let first = chars.next().map(|c| c.to_ascii_uppercase()).unwrap_or_default();
    format!("{first}{}.", chars.as_str())
}

/// Draws scenes until `ask` poses a question about one.
fn one_scene(rng: &mut Rng, config: &SceneConfig, task: Task, need: usize, ask: AskFn) -> Built {
    loop {
        let scene = scene_needing(rng, config, need);
        if let Some(q) = ask(rng, &scene) {
            return Built { target_box: q.target_box, ..Built::new(task, vec![scene], q.question, q.answer) };
        }
    }
}

/// A question about a given scene, when the scene allows a well-posed one.
type AskFn = fn(&mut Rng, &Scene) -> Option<Asked>;

pub(crate) struct Asked {
    question: String,
    answer: String,
    target_box: Option<[f32; 4]>,
}

fn asked(question: String, answer: String) -> Option<Asked> {
    Some(Asked { question, answer, target_box: None })
}

fn caption(rng: &mut Rng, config: &SceneConfig) -> Built {
    one_scene(rng, config, Task::Caption, 1, ask_caption)
}

fn ask_caption(rng: &mut Rng, scene: &Scene) -> Option<Asked> {
    // Left-to-right order must be visible: neighbours' centres at least this far apart.
    let gap = 0.02 * scene.width as f32 + 2.0;
    let mut xs: Vec<f32> = scene.objects.iter().map(|o| o.centre[0]).collect();
    xs.sort_by(f32::total_cmp);
    if !xs.windows(2).all(|w| w[1] - w[0] >= gap) {
        return None;
    }
    asked(say::caption(rng), caption_text(scene))
}

fn attribute(rng: &mut Rng, config: &SceneConfig) -> Built {
    one_scene(rng, config, Task::Attribute, 1, ask_attribute)
}

fn ask_attribute(rng: &mut Rng, scene: &Scene) -> Option<Asked> {
    let objs = &scene.objects;
    let (question, answer) = match rng.weighted(&[3, 3, 3, 1]) {
        0 => {
            // "What colour is the square?" needs exactly one square.
            let unique: Vec<&Object> = objs.iter().filter(|o| scene.count_shape(o.shape) == 1).collect();
            let o = pick_opt(rng, &unique)?;
            (say::colour_of(rng, o.shape.name()), o.colour.name().to_string())
        }
        1 => {
            let unique: Vec<&Object> = objs.iter().filter(|o| scene.count_colour(o.colour) == 1).collect();
            let o = pick_opt(rng, &unique)?;
            (say::shape_of(rng, o.colour.name()), o.shape.name().to_string())
        }
        2 => {
            if rng.chance(0.5) {
                let o = rng.pick(objs);
                (say::exists(rng, &o.name()), "yes".to_string())
            } else {
                // Mostly near misses (right colour or right shape), which need looking.
                let near = rng.chance(0.7);
                let absent: Vec<(Colour, Shape)> = Colour::ALL
                    .iter()
                    .flat_map(|&c| Shape::ALL.iter().map(move |&s| (c, s)))
                    .filter(|&(c, s)| scene.find(c, s).is_none())
                    .filter(|&(c, s)| !near || scene.count_colour(c) + scene.count_shape(s) > 0)
                    .collect();
                let &(c, s) = pick_opt(rng, &absent)?;
                (say::exists(rng, &format!("{} {}", c.name(), s.name())), "no".to_string())
            }
        }
        _ => {
            let o = rng.pick(objs);
            (say::size_of(rng, &o.name()), o.size.name().to_string())
        }
    };
    asked(question, answer)
}

fn pick_opt<'a, T>(rng: &mut Rng, items: &'a [T]) -> Option<&'a T> {
    (!items.is_empty()).then(|| rng.pick(items))
}

/// Mostly something present, sometimes anything (so "0" is a possible answer).
fn some_shape(rng: &mut Rng, scenes: &[&Scene]) -> Shape {
    let present: Vec<Shape> = scenes.iter().flat_map(|s| s.objects.iter().map(|o| o.shape)).collect();
    if present.is_empty() || rng.chance(0.2) {
        *rng.pick(&Shape::ALL)
    } else {
        *rng.pick(&present)
    }
}

fn some_colour(rng: &mut Rng, scenes: &[&Scene]) -> Colour {
    let present: Vec<Colour> = scenes.iter().flat_map(|s| s.objects.iter().map(|o| o.colour)).collect();
    if present.is_empty() || rng.chance(0.2) {
        *rng.pick(&Colour::ALL)
    } else {
        *rng.pick(&present)
    }
}

fn count(rng: &mut Rng, config: &SceneConfig) -> Built {
    one_scene(rng, config, Task::Count, 1, ask_count)
}

fn ask_count(rng: &mut Rng, scene: &Scene) -> Option<Asked> {
    let (question, n) = match rng.weighted(&[4, 4, 2]) {
        0 => (say::count_all(rng), scene.objects.len()),
        1 => {
            let s = some_shape(rng, &[scene]);
            (say::count_shape(rng, &s.plural()), scene.count_shape(s))
        }
        _ => {
            let c = some_colour(rng, &[scene]);
            (say::count_colour(rng, c.name()), scene.count_colour(c))
        }
    };
    asked(question, n.to_string())
}

fn relation(rng: &mut Rng, config: &SceneConfig) -> Built {
    // Relation first, then scenes until one has a clear instance of it: directional relations
    // are rarer than nearest/farthest, and would be crowded out if we took whatever came up.
    let rel = *rng.pick(&Relation::ALL);
    loop {
        let scene = scene_needing(rng, config, 3);
        if let Some(q) = ask_relation_of(rng, &scene, rel) {
            return Built::new(Task::Relation, vec![scene], q.question, q.answer);
        }
    }
}

fn ask_relation(rng: &mut Rng, scene: &Scene) -> Option<Asked> {
    let rel = *rng.pick(&Relation::ALL);
    ask_relation_of(rng, scene, rel)
}

fn ask_relation_of(rng: &mut Rng, scene: &Scene, rel: Relation) -> Option<Asked> {
    let pairs: Vec<(usize, usize)> =
        (0..scene.objects.len()).filter_map(|a| relation_answer(scene, a, rel).map(|b| (a, b))).collect();
    let &(a, b) = pick_opt(rng, &pairs)?;
    asked(say::relation(rng, rel, &scene.objects[a].name()), scene.objects[b].name())
}

fn grounding(rng: &mut Rng, config: &SceneConfig) -> Built {
    one_scene(rng, config, Task::Grounding, 1, ask_grounding)
}

fn ask_grounding(rng: &mut Rng, scene: &Scene) -> Option<Asked> {
    let o = rng.pick(&scene.objects).clone();
    let bbox = o.bbox();
    let answer = box_answer(&format!("the {}", o.name()), bbox, scene.width, scene.height);
    Some(Asked { question: say::locate(rng, &o.name()), answer, target_box: Some(bbox) })
}

/// Two scenes for a multi-image question. Their object counts can always differ, whatever the
/// config's range of objects, so a comparison question can always be posed.
fn scene_pair(rng: &mut Rng, config: &SceneConfig) -> (Scene, Scene) {
    let (min, max) = (config.min_objects.max(1), config.max_objects.max(config.min_objects + 1).max(2));
    (scene_with(rng, config, min, max), scene_with(rng, config, min, max))
}

fn multi_image(rng: &mut Rng, config: &SceneConfig) -> Built {
    let kind = rng.weighted(&[5, 2, 3]);
    let want_yes = rng.chance(0.5);
    loop {
        let (a, b) = scene_pair(rng, config);
        if let Some(q) = ask_multi_image(rng, &a, &b, kind, want_yes) {
            return Built::new(Task::MultiImage, vec![a, b], q.question, q.answer);
        }
    }
}

/// Kind 0 compares counts of a shape, 1 counts of objects, 2 asks whether both images hold a
/// colour (posed only when the answer is `want_yes`, to keep yes and no balanced).
fn ask_multi_image(rng: &mut Rng, a: &Scene, b: &Scene, kind: usize, want_yes: bool) -> Option<Asked> {
    let which = |first_wins: bool| (if first_wins { "the first image" } else { "the second image" }).to_string();
    match kind {
        0 => {
            let s = some_shape(rng, &[a, b]);
            let (na, nb) = (a.count_shape(s), b.count_shape(s));
            if na == nb {
                return None;
            }
            asked(say::more_shape(rng, &s.plural()), which(na > nb))
        }
        1 => {
            if a.objects.len() == b.objects.len() {
                return None;
            }
            asked(say::more_objects(rng), which(a.objects.len() > b.objects.len()))
        }
        _ => {
            let c = some_colour(rng, &[a, b]);
            let both = a.count_colour(c) > 0 && b.count_colour(c) > 0;
            if both != want_yes {
                return None;
            }
            asked(say::both_colour(rng, c.name()), (if both { "yes" } else { "no" }).to_string())
        }
    }
}

/// A video question about a fresh [`moving_clip`].
fn video(rng: &mut Rng, config: &SceneConfig) -> Built {
    let (scenes, dir) = moving_clip(rng, config);
    let question = say::direction(rng, &scenes[0].objects[0].name());
    Built::new(Task::Video, scenes, question, dir.name().to_string())
}

/// The frames of one object sliding in a straight line at constant speed across a fixed
/// background, and its direction. Up to three static distractors keep clear of its whole path;
/// the mover is each frame's first object, and its colour is unique, so it is named
/// unambiguously and can be tracked by colour.
pub fn moving_clip(rng: &mut Rng, config: &SceneConfig) -> (Vec<Scene>, Direction) {
    let (w, h) = layout::canvas(rng, config);
    let background = random_background(rng, config.texture_prob);
    let short = w.min(h) as f32;
    let frames = rng.int(config.min_frames, config.max_frames);
    let dir = *rng.pick(&Direction::ALL);
    let (shape, colour) = (*rng.pick(&Shape::ALL), *rng.pick(&Colour::ALL));
    let mover = layout::new_object(rng, shape, colour, short);
    let [a, b, c, d] = unit_bbox(shape).map(|v| v * mover.radius);
    let (x_lo, x_hi, y_lo, y_hi) = (EDGE - a, w as f32 - EDGE - c, EDGE - b, h as f32 - EDGE - d);
    let [sx, sy] = dir.step();
    let horizontal = sx != 0.0;
    // Travel 30-60% of the canvas along the axis (less only if the object cannot fit that).
    let (lo, hi, extent) = if horizontal { (x_lo, x_hi, w) } else { (y_lo, y_hi, h) };
    let travel = (extent as f32 * rng.float(0.3, 0.6)).min(hi - lo);
    let forward = sx + sy > 0.0;
    let start_along = if forward { rng.float(lo, hi - travel) } else { rng.float(lo + travel, hi) };
    let across = if horizontal { rng.float(y_lo, y_hi) } else { rng.float(x_lo, x_hi) };
    let start = if horizontal { [start_along, across] } else { [across, start_along] };
    let at = |k: usize| {
        let t = travel * k as f32 / (frames - 1) as f32;
        Object { centre: [start[0] + sx * t, start[1] + sy * t], ..mover.clone() }
    };
    let (b0, b1) = (at(0).bbox(), at(frames - 1).bbox());
    let swept = [b0[0].min(b1[0]), b0[1].min(b1[1]), b0[2].max(b1[2]), b0[3].max(b1[3])];
    let n = rng.int(0, 3.min(config.max_objects.saturating_sub(1)));
    let distractors: Vec<Object> = layout::pick_attributes(rng, n, |_, c| c == colour)
        .into_iter()
        .map(|(s, c)| layout::new_object(rng, s, c, short))
        .collect();
    let distractors = layout::layout(rng, distractors, (w, h), &[swept]);
    let scenes = (0..frames)
        .map(|k| {
            let mut objects = vec![at(k)];
            objects.extend(distractors.iter().cloned());
            Scene { width: w, height: h, background: background.clone(), objects }
        })
        .collect();
    (scenes, dir)
}
