//! The questions of each task about given scenes. Each builder draws scenes until it can ask a
//! question with exactly one right answer (CLEVR's rejection of ill-posed questions, Johnson
//! et al., 2017), deciding everything from scene data, so rejected scenes cost nothing to draw.

use super::layout::{relation_answer, scene_with, Object, Relation, Scene};
use super::phrasing as say;
use super::tasks::Built;
use super::vocab::{Colour, Shape};
use super::{box_answer, SceneConfig, Task};
use crate::rng::Rng;

/// A scene with at least `need` objects, whatever the config's minimum.
pub(super) fn scene_needing(rng: &mut Rng, config: &SceneConfig, need: usize) -> Scene {
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
            return Built::asked(task, vec![scene], q);
        }
    }
}

/// A question about a given scene, when the scene allows a well-posed one.
pub(super) type AskFn = fn(&mut Rng, &Scene) -> Option<Asked>;

pub(crate) struct Asked {
    pub question: String,
    pub answer: String,
    pub target_box: Option<[f32; 4]>,
    /// The boxes of the objects the answer is about (see [`super::Example::focus`]).
    pub focus: Vec<[f32; 4]>,
}

fn asked(question: String, answer: String) -> Option<Asked> {
    asked_about(question, answer, [])
}

/// A question whose answer is read off `objects`.
fn asked_about<'a>(question: String, answer: String, objects: impl IntoIterator<Item = &'a Object>) -> Option<Asked> {
    let focus = objects.into_iter().map(Object::bbox).collect();
    Some(Asked { question, answer, target_box: None, focus })
}

pub(super) fn caption(rng: &mut Rng, config: &SceneConfig) -> Built {
    one_scene(rng, config, Task::Caption, 1, ask_caption)
}

pub(super) fn ask_caption(rng: &mut Rng, scene: &Scene) -> Option<Asked> {
    // Left-to-right order must be visible: neighbours' centres at least this far apart.
    let gap = 0.02 * scene.width as f32 + 2.0;
    let mut xs: Vec<f32> = scene.objects.iter().map(|o| o.centre[0]).collect();
    xs.sort_by(f32::total_cmp);
    if !xs.windows(2).all(|w| w[1] - w[0] >= gap) {
        return None;
    }
    asked(say::caption(rng), caption_text(scene))
}

pub(super) fn attribute(rng: &mut Rng, config: &SceneConfig) -> Built {
    one_scene(rng, config, Task::Attribute, 1, ask_attribute)
}

pub(super) fn ask_attribute(rng: &mut Rng, scene: &Scene) -> Option<Asked> {
    let objs = &scene.objects;
    let (question, answer, about) = match rng.weighted(&[3, 3, 3, 1]) {
        0 => {
            // "What colour is the square?" needs exactly one square.
            let unique: Vec<&Object> = objs.iter().filter(|o| scene.count_shape(o.shape) == 1).collect();
            let o = *pick_opt(rng, &unique)?;
            (say::colour_of(rng, o.shape.name()), o.colour.name().to_string(), Some(o))
        }
        1 => {
            let unique: Vec<&Object> = objs.iter().filter(|o| scene.count_colour(o.colour) == 1).collect();
            let o = *pick_opt(rng, &unique)?;
            (say::shape_of(rng, o.colour.name()), o.shape.name().to_string(), Some(o))
        }
        2 => {
            if rng.chance(0.5) {
                let o = rng.pick(objs);
                (say::exists(rng, &o.name()), "yes".to_string(), Some(o))
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
                (say::exists(rng, &format!("{} {}", c.name(), s.name())), "no".to_string(), None)
            }
        }
        _ => {
            let o = rng.pick(objs);
            (say::size_of(rng, &o.name()), o.size.name().to_string(), Some(o))
        }
    };
    asked_about(question, answer, about)
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

pub(super) fn count(rng: &mut Rng, config: &SceneConfig) -> Built {
    one_scene(rng, config, Task::Count, 1, ask_count)
}

pub(super) fn ask_count(rng: &mut Rng, scene: &Scene) -> Option<Asked> {
    let objs = &scene.objects;
    let (question, counted): (String, Vec<&Object>) = match rng.weighted(&[4, 4, 2]) {
        0 => (say::count_all(rng), objs.iter().collect()),
        1 => {
            let s = some_shape(rng, &[scene]);
            (say::count_shape(rng, &s.plural()), objs.iter().filter(|o| o.shape == s).collect())
        }
        _ => {
            let c = some_colour(rng, &[scene]);
            (say::count_colour(rng, c.name()), objs.iter().filter(|o| o.colour == c).collect())
        }
    };
    asked_about(question, counted.len().to_string(), counted)
}

pub(super) fn relation(rng: &mut Rng, config: &SceneConfig) -> Built {
    // Relation first, then scenes until one has a clear instance of it: directional relations
    // are rarer than nearest/farthest, and would be crowded out if we took whatever came up.
    let rel = *rng.pick(&Relation::ALL);
    loop {
        let scene = scene_needing(rng, config, 3);
        if let Some(q) = ask_relation_of(rng, &scene, rel) {
            return Built::asked(Task::Relation, vec![scene], q);
        }
    }
}

pub(super) fn ask_relation(rng: &mut Rng, scene: &Scene) -> Option<Asked> {
    let rel = *rng.pick(&Relation::ALL);
    ask_relation_of(rng, scene, rel)
}

fn ask_relation_of(rng: &mut Rng, scene: &Scene, rel: Relation) -> Option<Asked> {
    let pairs: Vec<(usize, usize)> =
        (0..scene.objects.len()).filter_map(|a| relation_answer(scene, a, rel).map(|b| (a, b))).collect();
    let &(a, b) = pick_opt(rng, &pairs)?;
    // The anchor's tokens carry what stands beside it (the dense relation labels), the answer's
    // its name: either will do.
    let (anchor, answer) = (&scene.objects[a], &scene.objects[b]);
    asked_about(say::relation(rng, rel, &anchor.name()), answer.name(), [anchor, answer])
}

pub(super) fn grounding(rng: &mut Rng, config: &SceneConfig) -> Built {
    one_scene(rng, config, Task::Grounding, 1, ask_grounding)
}

pub(super) fn ask_grounding(rng: &mut Rng, scene: &Scene) -> Option<Asked> {
    let o = rng.pick(&scene.objects).clone();
    let bbox = o.bbox();
    let answer = box_answer(&format!("the {}", o.name()), bbox, scene.width, scene.height);
    Some(Asked { question: say::locate(rng, &o.name()), answer, target_box: Some(bbox), focus: vec![bbox] })
}

/// Two scenes for a multi-image question. Their object counts can always differ, whatever the
/// config's range of objects, so a comparison question can always be posed.
pub(super) fn scene_pair(rng: &mut Rng, config: &SceneConfig) -> (Scene, Scene) {
    let (min, max) = (config.min_objects.max(1), config.max_objects.max(config.min_objects + 1).max(2));
    (scene_with(rng, config, min, max), scene_with(rng, config, min, max))
}

pub(super) fn multi_image(rng: &mut Rng, config: &SceneConfig) -> Built {
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
pub(super) fn ask_multi_image(rng: &mut Rng, a: &Scene, b: &Scene, kind: usize, want_yes: bool) -> Option<Asked> {
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
