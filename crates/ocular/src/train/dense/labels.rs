//! What each merged vision token of a scene should say, read off the scene's layout: the
//! colour of the object covering it, where each object's centre lies, (for relation labels)
//! which object stands in each relation to the token's object, (for inventory labels) what the
//! whole image holds, and (for a video's tokens) which way the object under them moves.

use crate::train::scenes::{relation_answer, to_grid, Colour, Direction, Relation, Scene, Shape, Size};

/// The colour class of a token that no object covers; also "no such object" in relation labels.
pub const BACKGROUND: u32 = Colour::ALL.len() as u32;
pub const COLOUR_CLASSES: usize = Colour::ALL.len() + 1;
/// With centre labels, the shape class of a token that holds no object's centre; also "no
/// such object" in relation labels.
pub const NO_CENTRE: u32 = Shape::ALL.len() as u32;
/// Points sampled per side of a token's cell to measure what covers it.
const PROBES: usize = 4;
/// An object names a token's colour when it covers at least this many of its probe points.
const MIN_COVER: usize = PROBES * PROBES / 4;

/// What one image's merged tokens should say.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLabels {
    /// Per token, row-major: the colour class of the object covering most of it.
    pub colours: Vec<u32>,
    /// Per token: the index in the scene of that object, if any covers enough of it.
    pub objects: Vec<Option<usize>>,
    /// The token that holds each object's centre, in the scene's object order.
    pub centres: Vec<Centre>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Centre {
    pub token: usize,
    pub shape: u32,
    pub colour: u32,
    pub size: u32,
}

/// Labels for a `grid` (`[rows, cols]` of merged tokens) laid over `scene`'s whole canvas:
/// the processor resizes the canvas onto the grid, so each token covers an equal share of it.
pub fn token_labels(scene: &Scene, grid: [usize; 2]) -> TokenLabels {
    let [rows, cols] = grid;
    let (cell_w, cell_h) = (scene.width as f32 / cols as f32, scene.height as f32 / rows as f32);
    let mut objects = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let mut cover = vec![0usize; scene.objects.len()];
            for i in 0..PROBES * PROBES {
                let x = (c as f32 + ((i % PROBES) as f32 + 0.5) / PROBES as f32) * cell_w;
                let y = (r as f32 + ((i / PROBES) as f32 + 0.5) / PROBES as f32) * cell_h;
                if let Some(k) = scene.objects.iter().position(|o| o.contains(x, y)) {
                    cover[k] += 1;
                }
            }
            let best = cover.iter().enumerate().max_by_key(|&(_, n)| *n).filter(|&(_, n)| *n >= MIN_COVER);
            objects.push(best.map(|(k, _)| k));
        }
    }
    let colours = objects.iter().map(|k| k.map_or(BACKGROUND, |k| colour_class(scene.objects[k].colour))).collect();
    let centres = scene
        .objects
        .iter()
        .map(|o| {
            let r = ((o.centre[1] / cell_h) as usize).min(rows - 1);
            let c = ((o.centre[0] / cell_w) as usize).min(cols - 1);
            Centre {
                token: r * cols + c,
                shape: shape_class(o.shape),
                colour: colour_class(o.colour),
                size: size_class(o.size),
            }
        })
        .collect();
    TokenLabels { colours, objects, centres }
}

/// `(token, object)` wherever an object's own shape is labelled: each object's centre token,
/// and with `covered` every other token an object covers.
pub fn object_tokens(labels: &TokenLabels, covered: bool) -> Vec<(u32, usize)> {
    let mut tokens: Vec<(u32, usize)> = labels.centres.iter().enumerate().map(|(k, c)| (c.token as u32, k)).collect();
    if covered {
        for (token, object) in labels.objects.iter().enumerate() {
            if let (Some(k), false) = (object, labels.centres.iter().any(|c| c.token == token)) {
                tokens.push((token as u32, *k));
            }
        }
    }
    tokens
}

/// For each relation of [`Relation::ALL`], the colour and shape classes of the object standing
/// in it to `scene.objects[anchor]` (as a relation question would answer), or
/// `(BACKGROUND, NO_CENTRE)` where no object clearly does.
pub fn relation_classes(scene: &Scene, anchor: usize) -> [(u32, u32); 6] {
    Relation::ALL.map(|rel| {
        relation_answer(scene, anchor, rel).map_or((BACKGROUND, NO_CENTRE), |b| {
            let o = &scene.objects[b];
            (colour_class(o.colour), shape_class(o.shape))
        })
    })
}

/// Where `scene.objects[object]` stands in the caption's order (left to right by centre), and
/// the colour and shape classes of the object after it, or `(BACKGROUND, NO_CENTRE)` for the
/// last: what a caption writer needs to go on from an object it has just named.
pub fn order_classes(scene: &Scene, object: usize) -> (u32, (u32, u32)) {
    let mut order: Vec<usize> = (0..scene.objects.len()).collect();
    order.sort_by(|&a, &b| scene.objects[a].centre[0].total_cmp(&scene.objects[b].centre[0]));
    let rank = order.iter().position(|&k| k == object).unwrap_or(0);
    let next = order.get(rank + 1).map_or((BACKGROUND, NO_CENTRE), |&k| {
        let o = &scene.objects[k];
        (colour_class(o.colour), shape_class(o.shape))
    });
    (count_class(rank), next)
}

/// Tenths of the image per box edge: the first digit of a 0-1000 coordinate of 100 or more.
pub const BOX_BINS: usize = 10;

/// The tenth of the image's width or height holding each edge of `scene.objects[object]`'s
/// box, left, top, right, bottom (a box touching the far edge is in the last tenth).
pub fn box_tenths(scene: &Scene, object: usize) -> [u32; 4] {
    let [x1, y1, x2, y2] = scene.objects[object].bbox();
    let tenth = |px: f32, extent: u32| (to_grid(px, extent) as usize * BOX_BINS / 1000).min(BOX_BINS - 1) as u32;
    [tenth(x1, scene.width), tenth(y1, scene.height), tenth(x2, scene.width), tenth(y2, scene.height)]
}

/// Counts 0 to 8, the most objects a scene holds.
pub const COUNT_CLASSES: usize = 9;

/// The objects in `scene`, and those sharing `scene.objects[object]`'s shape and its colour.
pub fn count_classes(scene: &Scene, object: usize) -> [u32; 3] {
    let objects = &scene.objects;
    let Some(me) = objects.get(object) else { return [count_class(objects.len()), 0, 0] };
    [
        count_class(objects.len()),
        count_class(objects.iter().filter(|o| o.shape == me.shape).count()),
        count_class(objects.iter().filter(|o| o.colour == me.colour).count()),
    ]
}

/// Inventory groups: the count of each shape, then of each colour (each [`COUNT_CLASSES`]
/// ways), then whether each colour-shape pair is present (two ways), colour-major.
pub const INVENTORY_COUNTS: usize = Shape::ALL.len() + Colour::ALL.len();
pub const INVENTORY_PAIRS: usize = Shape::ALL.len() * Colour::ALL.len();

/// What `scene` holds, as [`INVENTORY_COUNTS`] count classes and [`INVENTORY_PAIRS`] presence
/// classes (1: present): what count and existence questions ask, the same at every token.
pub fn inventory_classes(scene: &Scene) -> (Vec<u32>, Vec<u32>) {
    let objects = &scene.objects;
    let counts = Shape::ALL
        .iter()
        .map(|&s| count_class(objects.iter().filter(|o| o.shape == s).count()))
        .chain(Colour::ALL.iter().map(|&c| count_class(objects.iter().filter(|o| o.colour == c).count())))
        .collect();
    let pairs = Colour::ALL
        .iter()
        .flat_map(|&c| Shape::ALL.iter().map(move |&s| (c, s)))
        .map(|(c, s)| u32::from(objects.iter().any(|o| o.colour == c && o.shape == s)))
        .collect();
    (counts, pairs)
}

/// The motion class of a still object; directions are their place in [`Direction::ALL`].
pub const STILL: u32 = Direction::ALL.len() as u32;

/// Labels for one time step of a video whose merged tokens hold frames `a` and `b` (the
/// mover is each frame's first object): per token the colour class of either frame's object
/// (frame `a`'s first), and `(token, motion class)` wherever an object covers a token or holds
/// its centre in either frame: the mover's `direction`, or [`STILL`] for the others.
pub fn motion_labels(a: &Scene, b: &Scene, grid: [usize; 2], direction: Direction) -> (Vec<u32>, Vec<(u32, u32)>) {
    let (la, lb) = (token_labels(a, grid), token_labels(b, grid));
    let (ca, cb) = (colours_with_centres(&la), colours_with_centres(&lb));
    let colours = ca.iter().zip(&cb).map(|(&x, &y)| if x == BACKGROUND { y } else { x }).collect();
    let moving = Direction::ALL.iter().position(|&d| d == direction).expect("every direction is listed") as u32;
    let mut motion: Vec<(u32, u32)> = Vec::new();
    for (token, object) in object_tokens(&la, true).into_iter().chain(object_tokens(&lb, true)) {
        let class = if object == 0 { moving } else { STILL };
        match motion.iter_mut().find(|(t, _)| *t == token) {
            // The mover wins a token it shares with a distractor in the other frame.
            Some(seen) => seen.1 = seen.1.min(class),
            None => motion.push((token, class)),
        }
    }
    motion.sort_unstable();
    (colours, motion)
}

/// Each token's colour class, a centre token taking its object's colour even when the object
/// covers little of it.
pub fn colours_with_centres(labels: &TokenLabels) -> Vec<u32> {
    let mut colours = labels.colours.clone();
    for centre in &labels.centres {
        colours[centre.token] = centre.colour;
    }
    colours
}

/// A count (or place) as a class, the last class holding it and anything larger.
fn count_class(n: usize) -> u32 {
    n.min(COUNT_CLASSES - 1) as u32
}

pub fn size_class(size: Size) -> u32 {
    Size::ALL.iter().position(|&z| z == size).expect("every size is listed") as u32
}

pub fn colour_class(colour: Colour) -> u32 {
    Colour::ALL.iter().position(|&c| c == colour).expect("every colour is listed") as u32
}

pub fn shape_class(shape: Shape) -> u32 {
    Shape::ALL.iter().position(|&s| s == shape).expect("every shape is listed") as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::scenes::{caption_text, Background, Object};

    fn object(shape: Shape, colour: Colour, centre: [f32; 2], radius: f32) -> Object {
        Object { shape, colour, size: Size::Large, rgb: colour.rgb(), centre, radius }
    }

    fn canvas(objects: Vec<Object>) -> Scene {
        // 112 x 56: on a 4 x 2 grid, 28-pixel cells.
        Scene { width: 112, height: 56, background: Background::Plain { base: [128, 128, 128] }, objects }
    }

    #[test]
    fn labels_follow_the_layout() {
        let scene = canvas(vec![
            object(Shape::Square, Colour::Red, [14.0, 14.0], 12.0),
            object(Shape::Circle, Colour::Blue, [70.0, 42.0], 4.0),
        ]);
        let labels = token_labels(&scene, [2, 4]);
        let (red, blue) = (colour_class(Colour::Red), colour_class(Colour::Blue));
        // The square fills the first cell; the small circle covers under a quarter of its cell.
        assert_eq!(
            labels.colours,
            vec![red, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND]
        );
        let centres: Vec<(usize, u32, u32)> = labels.centres.iter().map(|c| (c.token, c.shape, c.colour)).collect();
        assert_eq!(centres, vec![(0, shape_class(Shape::Square), red), (6, shape_class(Shape::Circle), blue)]);
        assert_eq!(labels.objects, vec![Some(0), None, None, None, None, None, None, None]);
        let big = canvas(vec![object(Shape::Circle, Colour::Blue, [70.0, 42.0], 13.0)]);
        assert_eq!(token_labels(&big, [2, 4]).colours[6], blue);
    }

    #[test]
    fn box_labels_are_the_tenths_holding_each_edge() {
        let scene = canvas(vec![
            // Box (2, 2)-(26, 26) of 112 x 56: grid 18, 36, 232, 464.
            object(Shape::Circle, Colour::Red, [14.0, 14.0], 12.0),
            // Box (88, 30)-(112, 54): grid 786, 536, 1000 (the last tenth), 964.
            object(Shape::Circle, Colour::Blue, [100.0, 42.0], 12.0),
        ]);
        assert_eq!(box_tenths(&scene, 0), [0, 0, 2, 4]);
        assert_eq!(box_tenths(&scene, 1), [7, 5, 9, 9]);
    }

    #[test]
    fn covered_labels_reach_every_token_an_object_covers() {
        let wide = canvas(vec![
            object(Shape::Triangle, Colour::Red, [56.0, 28.0], 27.0),
            object(Shape::Circle, Colour::Blue, [100.0, 10.0], 4.0),
        ]);
        let labels = token_labels(&wide, [2, 4]);
        assert_eq!((labels.centres[0].token, labels.centres[1].token, labels.objects[3]), (6, 3, None));
        let sorted = |covered| {
            let mut s = object_tokens(&labels, covered);
            s.sort();
            s
        };
        assert_eq!(sorted(false), vec![(3, 1), (6, 0)]);
        let covered: Vec<u32> =
            labels.objects.iter().enumerate().filter(|(_, o)| o.is_some()).map(|(t, _)| t as u32).collect();
        assert!(covered.len() > 1, "{:?}", labels.objects);
        let mut expected: Vec<(u32, usize)> =
            covered.iter().filter(|&&t| t != 6).map(|&t| (t, 0)).chain([(3, 1), (6, 0)]).collect();
        expected.sort();
        assert_eq!(sorted(true), expected);
    }

    #[test]
    fn count_labels_count_the_scene_and_the_object_s_shape_and_colour() {
        let scene = canvas(vec![
            object(Shape::Square, Colour::Red, [12.0, 28.0], 8.0),
            object(Shape::Circle, Colour::Red, [56.0, 28.0], 8.0),
            object(Shape::Square, Colour::Green, [100.0, 28.0], 8.0),
        ]);
        assert_eq!(count_classes(&scene, 0), [3, 2, 2]);
        assert_eq!(count_classes(&scene, 1), [3, 1, 2]);
        assert_eq!(count_classes(&scene, 2), [3, 2, 1]);
        assert_eq!(count_classes(&canvas(vec![]), 0), [0, 0, 0]);
    }

    #[test]
    fn inventory_labels_count_every_shape_and_colour_and_mark_the_pairs_present() {
        let scene = canvas(vec![
            object(Shape::Square, Colour::Red, [12.0, 28.0], 8.0),
            object(Shape::Circle, Colour::Red, [56.0, 28.0], 8.0),
            object(Shape::Square, Colour::Green, [100.0, 28.0], 8.0),
        ]);
        let (counts, pairs) = inventory_classes(&scene);
        let shapes: Vec<u32> = Shape::ALL
            .iter()
            .map(|&s| [(Shape::Square, 2), (Shape::Circle, 1)].iter().find(|p| p.0 == s).map_or(0, |p| p.1))
            .collect();
        let colours: Vec<u32> = Colour::ALL
            .iter()
            .map(|&c| [(Colour::Red, 2), (Colour::Green, 1)].iter().find(|p| p.0 == c).map_or(0, |p| p.1))
            .collect();
        assert_eq!(counts, [shapes, colours].concat());
        let present =
            |c: Colour, s: Shape| pairs[colour_class(c) as usize * Shape::ALL.len() + shape_class(s) as usize];
        assert_eq!(pairs.len(), INVENTORY_PAIRS);
        assert_eq!(pairs.iter().sum::<u32>(), 3);
        assert_eq!((present(Colour::Red, Shape::Square), present(Colour::Red, Shape::Circle)), (1, 1));
        assert_eq!((present(Colour::Green, Shape::Square), present(Colour::Green, Shape::Circle)), (1, 0));
        assert_eq!(inventory_classes(&canvas(vec![])).1, vec![0; INVENTORY_PAIRS]);
    }

    #[test]
    fn motion_labels_mark_the_mover_s_tokens_in_both_frames_and_the_rest_still() {
        // The red square moves right from the first cell to the second; the blue circle stays.
        let frame = |x: f32, y: f32| {
            canvas(vec![
                object(Shape::Square, Colour::Red, [x, y], 12.0),
                object(Shape::Circle, Colour::Blue, [98.0, 42.0], 12.0),
            ])
        };
        let (colours, motion) = motion_labels(&frame(14.0, 14.0), &frame(42.0, 14.0), [2, 4], Direction::Right);
        let (red, blue) = (colour_class(Colour::Red), colour_class(Colour::Blue));
        assert_eq!(&colours[..2], &[red, red]);
        assert_eq!(colours[7], blue);
        let right = Direction::ALL.iter().position(|&d| d == Direction::Right).unwrap() as u32;
        assert_eq!(motion, vec![(0, right), (1, right), (7, STILL)]);
        // The mover wins a token the circle covers in the other frame.
        let (_, crossed) = motion_labels(&frame(14.0, 14.0), &frame(98.0, 42.0), [2, 4], Direction::Right);
        assert_eq!(crossed, vec![(0, right), (7, right)]);
    }

    #[test]
    fn order_labels_follow_the_caption_left_to_right() {
        let scene = canvas(vec![
            object(Shape::Square, Colour::Red, [100.0, 28.0], 8.0),
            object(Shape::Circle, Colour::Blue, [12.0, 28.0], 8.0),
            object(Shape::Star, Colour::Green, [56.0, 28.0], 8.0),
        ]);
        assert!(caption_text(&scene).starts_with("A large blue circle, a large green star"));
        let green_star = (colour_class(Colour::Green), shape_class(Shape::Star));
        let red_square = (colour_class(Colour::Red), shape_class(Shape::Square));
        assert_eq!(order_classes(&scene, 1), (0, green_star));
        assert_eq!(order_classes(&scene, 2), (1, red_square));
        assert_eq!(order_classes(&scene, 0), (2, (BACKGROUND, NO_CENTRE)));
    }

    #[test]
    fn relation_labels_name_the_object_a_question_would() {
        let scene = canvas(vec![
            object(Shape::Square, Colour::Red, [12.0, 28.0], 8.0),
            object(Shape::Circle, Colour::Blue, [56.0, 28.0], 8.0),
            object(Shape::Star, Colour::Green, [100.0, 28.0], 8.0),
        ]);
        let none = (BACKGROUND, NO_CENTRE);
        let blue_circle = (colour_class(Colour::Blue), shape_class(Shape::Circle));
        let green_star = (colour_class(Colour::Green), shape_class(Shape::Star));
        for anchor in 0..3 {
            let expected = Relation::ALL.map(|rel| {
                relation_answer(&scene, anchor, rel)
                    .map_or(none, |b| (colour_class(scene.objects[b].colour), shape_class(scene.objects[b].shape)))
            });
            assert_eq!(relation_classes(&scene, anchor), expected);
        }
        // The red square, at the left: nothing left of it, the blue circle nearest, the green
        // star farthest.
        let red = relation_classes(&scene, 0);
        assert_eq!(red[0], none);
        assert_eq!((red[4], red[5]), (blue_circle, green_star));
    }
}
