//! Grounding: read the boxes out of a model's answer, place them on the original image, draw them.
//!
//! Two answer formats are read, whichever appears (both may, in one answer):
//! - Qwen2-VL's special tokens (its model card and chat template):
//!   `<|object_ref_start|>the red car<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`,
//!   see [`parse`] for the label rules;
//! - Qwen2.5-VL's JSON (its grounding cookbook): objects `{"bbox_2d": [x1, y1, x2, y2], "label": ..}`,
//!   alone or in an array, fenced in a ```` ```json ```` block or not, with any text around them.
//!
//! The numbers' meaning is not in the text, so the caller names it with [`Coords`]: Qwen2-VL
//! answers on a 0-1000 grid over the image, Qwen2.5-VL in pixels of the resized image it saw.
//!
//! A box that cannot be trusted is never guessed at: it becomes a [`Problem`] naming the text and
//! the reason, next to the boxes that did parse. Parsing never panics, whatever the text.

mod draw;
mod font;
mod json;
mod tokens;

use serde::{Serialize, Serializer};

pub use self::draw::{colour, draw};

/// What a box's numbers are measured in, before they are mapped to the original image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coords {
    /// 0..=1000 on each axis of the image, whatever its size (Qwen2-VL).
    Grid1000,
    /// Pixels of the resized image the model was given, `width` x `height` (Qwen2.5-VL).
    Resized { width: u32, height: u32 },
}

/// One box on the original image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// What the model called it; `None` when it gave no label (or an empty one).
    pub label: Option<String>,
    /// `[x1, y1, x2, y2]` in original-image pixels, `x1 <= x2` and `y1 <= y2`, inside the image.
    /// Values are exact (`x * width / 1000` or `x * width / resized_width`), not rounded;
    /// JSON output rounds them to two decimals.
    #[serde(rename = "box", serialize_with = "two_decimals")]
    pub bbox: [f32; 4],
}

/// A part of the answer that looked like a box but could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The offending text, trimmed and cut short when long.
    pub text: String,
    /// Why, in one line.
    pub reason: String,
}

/// Everything read from one answer. JSON: `{"boxes": [{"label": .., "box": [x1, y1, x2, y2]}],
/// "problems": [{"text": .., "reason": ..}]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Grounding {
    /// Special-token boxes first, then JSON boxes, each in the order they appear.
    pub boxes: Vec<Detection>,
    pub problems: Vec<Problem>,
}

/// Reads every box in `answer` and maps it onto the original image of `image_size` (width,
/// height) pixels. An answer with no box syntax at all gives an empty [`Grounding`].
///
/// Fixed silently: corners given in the wrong order (`x2 < x1` or `y2 < y1`) are swapped back;
/// whitespace anywhere inside a box is ignored; zero-width or zero-height boxes are kept.
///
/// Reported as problems, box dropped: a coordinate that is not a plain decimal number, a wrong
/// number of corners or coordinates, a coordinate outside the grid (0-1000) or the resized
/// image, a marker that is never closed (or closed without being opened), JSON that is cut off
/// or invalid around a `bbox_2d`, a `point_2d` (a point is not a box).
///
/// Reported as problems, box kept without a label: an empty label, a JSON label that is not a
/// string.
///
/// Labels in the special-token format: a box takes the label of the `<|object_ref_start|>..
/// <|object_ref_end|>` directly before it, with only whitespace or earlier boxes of that same
/// label in between; any other text in between, or no such label, leaves the box unlabelled.
pub fn parse(answer: &str, coords: Coords, image_size: (u32, u32)) -> Grounding {
    let mut out = Grounding::default();
    tokens::parse_tokens(answer, coords, image_size, &mut out);
    json::parse_json(answer, coords, image_size, &mut out);
    out
}

impl Grounding {
    fn problem(&mut self, text: &str, reason: impl Into<String>) {
        self.problems.push(Problem { text: snippet(text), reason: reason.into() });
    }
}

/// Checks raw corners `[x1, y1, x2, y2]` (as the model wrote them) against the coordinate space,
/// puts them in order, and maps them to original-image pixels. `Err` is the reason to report.
fn place(raw: [f64; 4], coords: Coords, (width, height): (u32, u32)) -> Result<[f32; 4], String> {
    let (space_w, space_h) = match coords {
        Coords::Grid1000 => (1000.0, 1000.0),
        Coords::Resized { width, height } if width == 0 || height == 0 => {
            return Err(format!("the model input size {width}x{height} has a zero side"));
        }
        Coords::Resized { width, height } => (f64::from(width), f64::from(height)),
    };
    for (i, (&v, name)) in raw.iter().zip(["x1", "y1", "x2", "y2"]).enumerate() {
        let limit = if i % 2 == 0 { space_w } else { space_h };
        if !(0.0..=limit).contains(&v) {
            let v = if v.abs() < 1e9 { format!("{v}") } else { format!("{v:e}") };
            return Err(match coords {
                Coords::Grid1000 => format!("{name} = {v} is outside the 0-1000 grid"),
                Coords::Resized { .. } => format!(
                    "{name} = {v} is outside the {space_w}x{space_h} model input ({} must be 0-{limit})",
                    &name[..1]
                ),
            });
        }
    }
    let [x1, y1, x2, y2] = raw;
    let (x1, x2) = (x1.min(x2), x1.max(x2));
    let (y1, y2) = (y1.min(y2), y1.max(y2));
    let (w, h) = (f64::from(width), f64::from(height));
    Ok([(x1 * w / space_w) as f32, (y1 * h / space_h) as f32, (x2 * w / space_w) as f32, (y2 * h / space_h) as f32])
}

/// Answer text for a [`Problem`]: trimmed, at most `MAX` characters, `…` marking a cut.
fn snippet(text: &str) -> String {
    const MAX: usize = 120;
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The start of `text` for a reason: its first line, at most 20 characters, `…` marking a cut.
fn preview(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut p: String = line.chars().take(20).collect();
    if p.len() < text.len() {
        p.push('…');
    }
    p
}

fn two_decimals<S: Serializer>(bbox: &[f32; 4], s: S) -> Result<S::Ok, S::Error> {
    bbox.map(|v| (f64::from(v) * 100.0).round() / 100.0).serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_maps_to_pixels() {
        let g = parse("<|box_start|>(100,200),(500,1000)<|box_end|>", Coords::Grid1000, (640, 480));
        assert_eq!(g.problems, []);
        assert_eq!(g.boxes, [Detection { label: None, bbox: [64.0, 96.0, 320.0, 480.0] }]);
    }

    #[test]
    fn resized_pixels_map_to_original() {
        let answer = r#"[{"bbox_2d": [28, 42, 56, 84], "label": "cat"}]"#;
        let g = parse(answer, Coords::Resized { width: 56, height: 84 }, (50, 90));
        assert_eq!(g.problems, []);
        assert_eq!(g.boxes, [Detection { label: Some("cat".into()), bbox: [25.0, 45.0, 50.0, 90.0] }]);
    }

    #[test]
    fn both_formats_in_one_answer() {
        let answer = "<|box_start|>(0,0),(500,500)<|box_end|> and {\"bbox_2d\": [0, 0, 250, 1000]}";
        let g = parse(answer, Coords::Grid1000, (100, 100));
        assert_eq!(
            g.boxes.iter().map(|d| d.bbox).collect::<Vec<_>>(),
            [[0.0, 0.0, 50.0, 50.0], [0.0, 0.0, 25.0, 100.0]]
        );
    }

    #[test]
    fn plain_text_has_no_boxes_and_no_problems() {
        let g = parse("There is a cat on the mat (left side), [probably].", Coords::Grid1000, (10, 10));
        assert_eq!(g, Grounding::default());
    }

    #[test]
    fn place_checks_range_and_orders_corners() {
        let size = (200, 100);
        assert_eq!(place([500.0, 800.0, 100.0, 200.0], Coords::Grid1000, size), Ok([20.0, 20.0, 100.0, 80.0]));
        assert_eq!(
            place([0.0, 0.0, 1000.5, 10.0], Coords::Grid1000, size),
            Err("x2 = 1000.5 is outside the 0-1000 grid".into())
        );
        let resized = Coords::Resized { width: 28, height: 56 };
        assert_eq!(
            place([0.0, -3.0, 1.0, 1.0], resized, size),
            Err("y1 = -3 is outside the 28x56 model input (y must be 0-56)".into())
        );
        assert_eq!(
            place([0.0, 0.0, 1e300, 1.0], Coords::Grid1000, size),
            Err("x2 = 1e300 is outside the 0-1000 grid".into())
        );
        assert_eq!(
            place([0.0; 4], Coords::Resized { width: 0, height: 5 }, size),
            Err("the model input size 0x5 has a zero side".into())
        );
    }

    #[test]
    fn json_output_rounds_to_two_decimals() {
        let g = Grounding {
            boxes: vec![
                Detection { label: Some("a".into()), bbox: [1.0 / 3.0, 2.0, 10.125, 99.999] },
                Detection { label: None, bbox: [0.0, 0.0, 1.0, 1.0] },
            ],
            problems: vec![Problem { text: "(1,x)".into(), reason: "bad".into() }],
        };
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            r#"{"boxes":[{"label":"a","box":[0.33,2.0,10.13,100.0]},{"label":null,"box":[0.0,0.0,1.0,1.0]}],"problems":[{"text":"(1,x)","reason":"bad"}]}"#
        );
    }

    #[test]
    fn snippets_are_trimmed_and_cut_on_character_boundaries() {
        assert_eq!(snippet("  (1,2)\n"), "(1,2)");
        let long = "é".repeat(200);
        assert_eq!(snippet(&long), format!("{}…", "é".repeat(120)));
    }

    /// xorshift64: a fixed, dependency-free stream for the fuzz test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_text_never_panics_and_boxes_stay_inside_the_image() {
        #[rustfmt::skip]
        const PIECES: &[&str] = &[
            "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "(", ")", ",", " ", "\n",
            "0", "1", "5", "9", "10", "999", "1000", "1001", ".", "-", "+", "e", "{", "}", "[", "]", "\"", ":",
            "\"bbox_2d\"", "\"label\"", "\"point_2d\"", "null", "car", "é", "中", "```json", "```", "\\", "nan",
            "(12,34),(56,78)", "<|box_start|>(5,5),(50,25)<|box_end|>", r#"{"bbox_2d": [1, 2, 30, 20], "label": "x"}"#,
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let size = (640, 480);
        let (mut boxes, mut problems) = (0, 0);
        for round in 0..20_000 {
            let text: String = if round % 10 == 0 {
                let bytes: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                (0..rng.below(40)).map(|_| PIECES[rng.below(PIECES.len())]).collect()
            };
            let coords = if round % 2 == 0 { Coords::Grid1000 } else { Coords::Resized { width: 56, height: 28 } };
            let g = parse(&text, coords, size);
            boxes += g.boxes.len();
            problems += g.problems.len();
            for d in &g.boxes {
                let [x1, y1, x2, y2] = d.bbox;
                assert!(0.0 <= x1 && x1 <= x2 && x2 <= 640.0, "{text:?} gave {d:?}");
                assert!(0.0 <= y1 && y1 <= y2 && y2 <= 480.0, "{text:?} gave {d:?}");
            }
            for p in &g.problems {
                assert!(!p.reason.is_empty() && !p.reason.contains('\n'), "{text:?} gave {p:?}");
            }
        }
        assert!(boxes > 100 && problems > 1000, "the pieces reach both paths: {boxes} boxes, {problems} problems");
    }
}
