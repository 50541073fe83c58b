//! Cross-module tests of the scene dataset: determinism, valid layouts, rendering, phrasing.
//! Answer correctness per task is in `task_tests`.

use std::collections::HashSet;

use super::layout::{scene_with, Scene};
use super::tasks::{build, Built};
use super::vocab::{Colour, Direction, Size};
use super::*;

pub(super) fn words(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).map(String::from).collect()
}

/// Objects whose "colour shape" appears as two adjacent words in `text`.
pub(super) fn named(scene: &Scene, text: &str) -> Vec<usize> {
    let w = words(text);
    (0..scene.objects.len())
        .filter(|&i| {
            let o = &scene.objects[i];
            w.windows(2).any(|p| p[0] == o.colour.name() && p[1] == o.shape.name())
        })
        .collect()
}

pub(super) fn has_word(text: &str, any: &[&str]) -> bool {
    words(text).iter().any(|w| any.contains(&w.as_str()))
}

pub(super) fn built(seed: u64, task: Task, n: usize) -> Vec<Built> {
    let mut rng = Rng::seed_from_u64(seed);
    let cfg = SceneConfig::default();
    (0..n).map(|_| build(&mut rng, &cfg, task)).collect()
}

#[test]
fn same_seed_same_examples_different_seed_different() {
    let cfg = SceneConfig::default();
    let (mut a, mut b, mut c) =
        (Generator::new(9, cfg.clone()), Generator::new(9, cfg.clone()), Generator::new(10, cfg));
    let mut differs = false;
    for task in Task::ALL {
        let (x, y, z) = (a.example(task), b.example(task), c.example(task));
        assert_eq!((x.kind, &x.question, &x.answer, x.target_box), (task, &y.question, &y.answer, y.target_box));
        assert_eq!(x.images, y.images);
        assert_eq!(x.video, y.video);
        differs |= x.images != z.images || x.video != z.video || x.question != z.question;
    }
    assert!(differs, "seeds 9 and 10 gave identical examples");
    // Iterator and mixed() agree and draw several tasks.
    let kinds: HashSet<Task> = Generator::new(3, SceneConfig::default()).take(40).map(|e| e.kind).collect();
    assert!(kinds.len() >= 6, "{kinds:?}");
}

#[test]
fn scenes_are_valid_layouts() {
    let mut rng = Rng::seed_from_u64(1);
    let cfg = SceneConfig::default();
    let mut counts = [0usize; 7];
    for _ in 0..500 {
        let s = scene(&mut rng, &cfg);
        assert!((112..=448).contains(&s.width) && (112..=448).contains(&s.height));
        assert!((1..=6).contains(&s.objects.len()));
        counts[s.objects.len()] += 1;
        let short = s.short_side();
        for (i, o) in s.objects.iter().enumerate() {
            let [x1, y1, x2, y2] = o.bbox();
            assert!(x1 >= 0.0 && y1 >= 0.0 && x2 <= s.width as f32 && y2 <= s.height as f32, "{o:?} outside");
            let band = match o.size {
                Size::Small => (0.055 * short).max(8.0)..=(0.065 * short).max(8.0),
                Size::Large => (0.10 * short).max(14.0)..=(0.115 * short).max(14.0),
            };
            assert!(band.contains(&o.radius), "{o:?}");
            for p in &s.objects[i + 1..] {
                assert!(layout::separated(o.bbox(), p.bbox(), 4.0), "{o:?} touches {p:?}");
                assert!((o.colour, o.shape) != (p.colour, p.shape));
            }
        }
    }
    // Crowded small canvases may lose an object now and then, but six-object scenes exist.
    assert!(counts[6] > 40, "{counts:?}");
}

#[test]
fn object_centres_have_the_object_colour() {
    let mut rng = Rng::seed_from_u64(2);
    for _ in 0..60 {
        let s = scene(&mut rng, &SceneConfig::default());
        let img = s.render();
        assert_eq!(img.dimensions(), (s.width, s.height));
        for o in &s.objects {
            let p = img.get_pixel(o.centre[0] as u32, o.centre[1] as u32).0;
            assert_eq!(p, o.rgb, "{o:?}");
            let named = o.colour.rgb();
            assert!(p.iter().zip(named).all(|(&a, b)| (a as i32 - b as i32).abs() <= 8));
        }
    }
}

#[test]
fn rendered_video_moves_the_way_the_answer_says() {
    let mut gen = Generator::new(21, SceneConfig::default());
    for _ in 0..25 {
        let ex = gen.example(Task::Video);
        assert!(ex.images.is_empty());
        let frames = ex.video.unwrap();
        assert!(frames.iter().all(|f| f.dimensions() == frames[0].dimensions()));
        // Track the mover by its colour name: the pixels near that colour's reference RGB.
        let colour = Colour::ALL.iter().find(|c| words(&ex.question).contains(&c.name().to_string())).unwrap();
        let centroid = |f: &RgbImage| {
            let (mut sx, mut sy, mut n) = (0.0f64, 0.0f64, 0.0f64);
            for (x, y, p) in f.enumerate_pixels() {
                let d: i32 = p.0.iter().zip(colour.rgb()).map(|(&a, b)| (a as i32 - b as i32).pow(2)).sum();
                if d < 30 * 30 {
                    (sx, sy, n) = (sx + x as f64, sy + y as f64, n + 1.0);
                }
            }
            assert!(n > 50.0, "mover not visible");
            [sx / n, sy / n]
        };
        let track: Vec<[f64; 2]> = frames.iter().map(centroid).collect();
        let [sx, sy] = Direction::ALL.iter().find(|d| d.name() == ex.answer).unwrap().step();
        for w in track.windows(2) {
            let along = (w[1][0] - w[0][0]) * sx as f64 + (w[1][1] - w[0][1]) * sy as f64;
            assert!(along > 2.0, "{}: {track:?}", ex.answer);
        }
    }
}

#[test]
fn questions_are_phrased_many_ways() {
    for task in Task::ALL {
        let distinct: HashSet<String> = built(7, task, 200).into_iter().map(|b| b.question).collect();
        assert!(distinct.len() >= 4, "{task}: {distinct:?}");
        // Surface forms vary too: some question without its final punctuation.
        assert!(distinct.iter().any(|q| !q.ends_with(['?', '.'])), "{task}");
    }
}

#[test]
fn small_configs_still_produce_every_task() {
    let cfg =
        SceneConfig { min_side: 96, max_side: 120, max_objects: 2, min_frames: 2, max_frames: 2, ..Default::default() };
    let mut rng = Rng::seed_from_u64(4);
    for task in Task::ALL {
        for _ in 0..20 {
            let b = build(&mut rng, &cfg, task);
            assert!(b.scenes.iter().all(|s| s.width <= 120 && !s.objects.is_empty()));
        }
    }
    let s = scene_with(&mut rng, &cfg, 1, 1);
    assert_eq!(s.objects.len(), 1);
}

/// Writes one example per task under the temp dir for a human to look at:
/// `cargo test -p ocular --lib train::scenes::tests::dump -- --ignored --nocapture`.
#[test]
#[ignore]
fn dump_examples_for_viewing() {
    let dir = std::env::temp_dir().join("ocular_scenes");
    std::fs::create_dir_all(&dir).unwrap();
    let mut gen = Generator::new(2024, SceneConfig::default());
    for task in Task::ALL {
        for k in 0..3 {
            let ex = gen.example(task);
            let mut media = ex.images.clone();
            // Grounding: outline the box read back from the answer, to eyeball the format.
            if let Some((_, [x1, y1, x2, y2])) = parse_box_answer(&ex.answer) {
                let img = &mut media[0];
                let (w, h) = (img.width() as f32, img.height() as f32);
                let px = |g: u32, ext: f32| ((g as f32 / 1000.0 * ext) as u32).min(ext as u32 - 1);
                let (x1, y1, x2, y2) = (px(x1, w), px(y1, h), px(x2, w), px(y2, h));
                for x in x1..=x2 {
                    img.put_pixel(x, y1, ::image::Rgb([0, 0, 0]));
                    img.put_pixel(x, y2, ::image::Rgb([0, 0, 0]));
                }
                for y in y1..=y2 {
                    img.put_pixel(x1, y, ::image::Rgb([0, 0, 0]));
                    img.put_pixel(x2, y, ::image::Rgb([0, 0, 0]));
                }
            }
            media.extend(ex.video.clone().unwrap_or_default());
            // Side by side on a white strip, so a video reads left to right.
            let w: u32 = media.iter().map(|m| m.width() + 4).sum();
            let h = media.iter().map(|m| m.height()).max().unwrap();
            let mut strip = RgbImage::from_pixel(w, h, ::image::Rgb([255, 255, 255]));
            let mut x = 0;
            for m in &media {
                ::image::imageops::replace(&mut strip, m, x as i64, 0);
                x += m.width() + 4;
            }
            let path = dir.join(format!("{task}_{k}.png"));
            strip.save(&path).unwrap();
            println!("{}: {:?} -> {:?}", path.display(), ex.question, ex.answer);
        }
    }
}
