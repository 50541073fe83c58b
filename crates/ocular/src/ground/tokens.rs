//! Qwen2-VL's grounding in special tokens, as its model card and chat template write it:
//! `<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`, one
//! label possibly followed by several boxes. Only the explicit markers are read: with the special
//! tokens stripped from the text there is nothing reliable left to find.

use super::{place, preview, Coords, Detection, Grounding};

const REF_START: &str = "<|object_ref_start|>";
const REF_END: &str = "<|object_ref_end|>";
const BOX_START: &str = "<|box_start|>";
const BOX_END: &str = "<|box_end|>";
const MARKERS: [&str; 4] = [REF_START, REF_END, BOX_START, BOX_END];

/// The first marker at or after `from`: (its byte offset, the marker).
fn next_marker(text: &str, from: usize) -> Option<(usize, &'static str)> {
    MARKERS.iter().filter_map(|&m| text[from..].find(m).map(|at| (from + at, m))).min_by_key(|&(at, _)| at)
}

/// Appends the special-token boxes of `answer` to `out`, see [`super::parse`] for the rules.
pub(super) fn parse_tokens(answer: &str, coords: Coords, image_size: (u32, u32), out: &mut Grounding) {
    // The label that the next box takes, valid while only whitespace and boxes follow it.
    let mut label: Option<String> = None;
    let mut pos = 0;
    while let Some((at, marker)) = next_marker(answer, pos) {
        if !answer[pos..at].trim().is_empty() {
            label = None;
        }
        let body_start = at + marker.len();
        let next = next_marker(answer, body_start);
        let body_end = next.map_or(answer.len(), |(n, _)| n);
        match (marker, next) {
            (REF_START, Some((end, REF_END))) => {
                let text = answer[body_start..end].trim();
                label = (!text.is_empty()).then(|| text.to_string());
                if label.is_none() {
                    out.problem(&answer[at..end + REF_END.len()], "empty label; the boxes after it have none");
                }
                pos = end + REF_END.len();
            }
            (BOX_START, Some((end, BOX_END))) => {
                let text = &answer[at..end + BOX_END.len()];
                match parse_corners(&answer[body_start..end]).and_then(|raw| place(raw, coords, image_size)) {
                    Ok(bbox) => out.boxes.push(Detection { label: label.clone(), bbox }),
                    Err(reason) => out.problem(text, reason),
                }
                pos = end + BOX_END.len();
            }
            (REF_START | BOX_START, _) => {
                let closer = if marker == REF_START { REF_END } else { BOX_END };
                out.problem(&answer[at..body_end], format!("`{marker}` is not closed by `{closer}`"));
                label = None;
                pos = body_end;
            }
            _ => {
                let opener = if marker == REF_END { REF_START } else { BOX_START };
                // The text just before a stray closer is what it was meant to close.
                let lead = answer[pos..at].char_indices().rev().nth(40).map_or(pos, |(i, _)| pos + i);
                out.problem(&answer[lead..body_start], format!("`{marker}` without a `{opener}` before it"));
                label = None;
                pos = body_start;
            }
        }
    }
}

/// `(x1,y1),(x2,y2)` with any whitespace between the parts, as written (not yet checked or
/// ordered). `Err` is the reason to report.
fn parse_corners(body: &str) -> Result<[f64; 4], String> {
    const SHAPE: &str = "`(x1,y1),(x2,y2)`";
    let mut corners: Vec<[f64; 2]> = Vec::new();
    let mut rest = body.trim_start();
    if rest.is_empty() {
        return Err(format!("empty box; expected {SHAPE}"));
    }
    loop {
        let Some(inner) = rest.strip_prefix('(') else {
            return Err(format!("expected `(` to open a corner of {SHAPE}, found `{}`", preview(rest)));
        };
        let Some(close) = inner.find(')') else {
            return Err(format!("corner `({}` is not closed by `)`", preview(inner)));
        };
        let parts: Vec<&str> = inner[..close].split(',').collect();
        let [x, y] = parts[..] else {
            return Err(format!("corner `({})` has {} coordinates, not 2", preview(&inner[..close]), parts.len()));
        };
        corners.push([number(x)?, number(y)?]);
        rest = inner[close + 1..].trim_start();
        match rest.strip_prefix(',') {
            Some(after) => rest = after.trim_start(),
            None if rest.is_empty() => break,
            None => {
                return Err(format!("expected `,` or the end of the box after a corner, found `{}`", preview(rest)))
            }
        }
    }
    match corners[..] {
        [[x1, y1], [x2, y2]] => Ok([x1, y1, x2, y2]),
        _ => Err(format!("expected two corners {SHAPE}, found {}", corners.len())),
    }
}

/// A plain decimal: optional sign, digits, at most one `.`; no exponent, `inf` or `nan`.
fn number(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    let plain = digits.bytes().any(|b| b.is_ascii_digit())
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1;
    match plain.then(|| t.parse::<f64>()) {
        Some(Ok(v)) => Ok(v),
        _ if t.is_empty() => Err("a coordinate is missing".to_string()),
        _ => Err(format!("coordinate `{}` is not a number", preview(t))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Problem};
    use super::*;

    fn grid(answer: &str) -> Grounding {
        parse(answer, Coords::Grid1000, (1000, 1000))
    }

    fn det(label: Option<&str>, bbox: [f32; 4]) -> Detection {
        Detection { label: label.map(str::to_string), bbox }
    }

    fn problem(text: &str, reason: &str) -> Problem {
        Problem { text: text.into(), reason: reason.into() }
    }

    #[test]
    fn labelled_box() {
        let g = grid("Here: <|object_ref_start|>the red car<|object_ref_end|><|box_start|>(10,20),(30,40)<|box_end|>.");
        assert_eq!(g, Grounding { boxes: vec![det(Some("the red car"), [10.0, 20.0, 30.0, 40.0])], problems: vec![] });
    }

    #[test]
    fn one_label_many_boxes_and_whitespace() {
        let g = grid(concat!(
            "<|object_ref_start|> dogs <|object_ref_end|>\n<|box_start|>( 1 , 2 ) , ( 3 , 4 )<|box_end|> ",
            "<|box_start|>(5,6),(7,8)<|box_end|> then text <|box_start|>(9,9),(10,10)<|box_end|>"
        ));
        assert_eq!(g.problems, []);
        assert_eq!(
            g.boxes,
            [
                det(Some("dogs"), [1.0, 2.0, 3.0, 4.0]),
                det(Some("dogs"), [5.0, 6.0, 7.0, 8.0]),
                det(None, [9.0, 9.0, 10.0, 10.0])
            ]
        );
    }

    #[test]
    fn a_new_label_replaces_the_old_one() {
        let g = grid(concat!(
            "<|object_ref_start|>a<|object_ref_end|><|box_start|>(1,1),(2,2)<|box_end|>",
            "<|object_ref_start|>b<|object_ref_end|><|box_start|>(3,3),(4,4)<|box_end|>"
        ));
        assert_eq!(g.boxes, [det(Some("a"), [1.0, 1.0, 2.0, 2.0]), det(Some("b"), [3.0, 3.0, 4.0, 4.0])]);
    }

    #[test]
    fn decimals_and_swapped_corners() {
        let g = parse("<|box_start|>(500.5,250),(100,0.25)<|box_end|>", Coords::Grid1000, (2000, 400));
        assert_eq!(g.problems, []);
        assert_eq!(g.boxes, [det(None, [200.0, 0.1, 1001.0, 100.0])]);
    }

    #[test]
    fn grid_edges_are_inside() {
        let g = grid("<|box_start|>(0,0),(1000,1000)<|box_end|>");
        assert_eq!(g.boxes, [det(None, [0.0, 0.0, 1000.0, 1000.0])]);
    }

    #[test]
    fn malformed_boxes_are_reported_and_skipped() {
        let cases = [
            ("<|box_start|>(12,abc),(3,4)<|box_end|>", "coordinate `abc` is not a number"),
            ("<|box_start|>(1,2),(3,1e3)<|box_end|>", "coordinate `1e3` is not a number"),
            ("<|box_start|>(1,2),(3,nan)<|box_end|>", "coordinate `nan` is not a number"),
            ("<|box_start|>(1,2),(3,)<|box_end|>", "a coordinate is missing"),
            ("<|box_start|>(1,2,3),(3,4)<|box_end|>", "corner `(1,2,3)` has 3 coordinates, not 2"),
            ("<|box_start|>(1,2)<|box_end|>", "expected two corners `(x1,y1),(x2,y2)`, found 1"),
            ("<|box_start|>(1,2),(3,4),(5,6)<|box_end|>", "expected two corners `(x1,y1),(x2,y2)`, found 3"),
            ("<|box_start|>  <|box_end|>", "empty box; expected `(x1,y1),(x2,y2)`"),
            (
                "<|box_start|>[1,2,3,4]<|box_end|>",
                "expected `(` to open a corner of `(x1,y1),(x2,y2)`, found `[1,2,3,4]`",
            ),
            ("<|box_start|>(1,2) (3,4)<|box_end|>", "expected `,` or the end of the box after a corner, found `(3,4)`"),
            ("<|box_start|>(1,2),(3,4<|box_end|>", "corner `(3,4` is not closed by `)`"),
            ("<|box_start|>(1,2),(3,1200)<|box_end|>", "y2 = 1200 is outside the 0-1000 grid"),
            ("<|box_start|>(-1,2),(3,4)<|box_end|>", "x1 = -1 is outside the 0-1000 grid"),
        ];
        for (answer, reason) in cases {
            let g = grid(answer);
            assert_eq!(g, Grounding { boxes: vec![], problems: vec![problem(answer, reason)] }, "{answer}");
        }
    }

    #[test]
    fn unclosed_markers_are_reported_and_parsing_goes_on() {
        let g = grid("<|box_start|>(1,2),(3,4) <|box_start|>(5,6),(7,8)<|box_end|>");
        assert_eq!(g.boxes, [det(None, [5.0, 6.0, 7.0, 8.0])]);
        assert_eq!(g.problems, [problem("<|box_start|>(1,2),(3,4)", "`<|box_start|>` is not closed by `<|box_end|>`")]);

        let g = grid("the answer was cut off <|box_start|>(1,2),(3");
        assert_eq!(g.problems, [problem("<|box_start|>(1,2),(3", "`<|box_start|>` is not closed by `<|box_end|>`")]);

        let g = grid("<|object_ref_start|>car<|box_start|>(1,1),(2,2)<|box_end|>");
        assert_eq!(g.boxes, [det(None, [1.0, 1.0, 2.0, 2.0])]);
        assert_eq!(
            g.problems,
            [problem("<|object_ref_start|>car", "`<|object_ref_start|>` is not closed by `<|object_ref_end|>`")]
        );
    }

    #[test]
    fn stray_closers_are_reported() {
        let g = grid("the car (1,2),(3,4)<|box_end|>");
        assert_eq!(
            g.problems,
            [problem("the car (1,2),(3,4)<|box_end|>", "`<|box_end|>` without a `<|box_start|>` before it")]
        );
        let g = grid("car<|object_ref_end|><|box_start|>(1,1),(2,2)<|box_end|>");
        assert_eq!(g.boxes, [det(None, [1.0, 1.0, 2.0, 2.0])]);
        assert_eq!(g.problems[0].reason, "`<|object_ref_end|>` without a `<|object_ref_start|>` before it");
    }

    #[test]
    fn empty_label_keeps_the_box_unlabelled() {
        let g = grid("<|object_ref_start|> <|object_ref_end|><|box_start|>(1,1),(2,2)<|box_end|>");
        assert_eq!(g.boxes, [det(None, [1.0, 1.0, 2.0, 2.0])]);
        assert_eq!(
            g.problems,
            [problem("<|object_ref_start|> <|object_ref_end|>", "empty label; the boxes after it have none")]
        );
    }

    #[test]
    fn a_bad_box_does_not_end_its_label() {
        let g = grid("<|object_ref_start|>cup<|object_ref_end|><|box_start|>(1,x),(2,2)<|box_end|><|box_start|>(3,3),(4,4)<|box_end|>");
        assert_eq!(g.boxes, [det(Some("cup"), [3.0, 3.0, 4.0, 4.0])]);
        assert_eq!(g.problems.len(), 1);
    }

    #[test]
    fn garbage_between_markers_is_reported_with_a_short_preview() {
        let answer = format!("<|box_start|>{}<|box_end|>", "zq".repeat(50));
        let g = grid(&answer);
        assert_eq!(
            g.problems[0].reason,
            format!("expected `(` to open a corner of `(x1,y1),(x2,y2)`, found `{}…`", "zq".repeat(10))
        );
        assert!(g.problems[0].text.ends_with('…'), "long snippets are cut");
    }
}
