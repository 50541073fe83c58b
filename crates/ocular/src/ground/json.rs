//! Qwen2.5-VL's grounding in JSON, as its grounding cookbook shows it: objects
//! `{"bbox_2d": [x1, y1, x2, y2], "label": "..."}`, usually an array in a ```` ```json ```` block
//! with prose around it. Every object carrying `bbox_2d` is read wherever it sits, so fences,
//! surrounding text, a lone object or an object nested in another all work, and the good
//! objects of a cut-off array are kept.

use serde_json::{Map, Value};

use super::{place, preview, Coords, Detection, Grounding};

/// Appends the JSON boxes of `answer` to `out`.
pub(super) fn parse_json(answer: &str, coords: Coords, image_size: (u32, u32), out: &mut Grounding) {
    if !answer.contains("bbox_2d") && !answer.contains("point_2d") {
        return;
    }
    let mut pos = 0;
    // Try every `{` as the start of an object; skip past the ones that are boxes, and step into
    // the others, since a box may sit inside them.
    while let Some(offset) = answer[pos..].find('{') {
        let start = pos + offset;
        let mut values = serde_json::Deserializer::from_str(&answer[start..]).into_iter::<Value>();
        match values.next() {
            Some(Ok(Value::Object(object))) if object.contains_key("bbox_2d") || object.contains_key("point_2d") => {
                let end = start + values.byte_offset();
                read_object(&object, &answer[start..end], coords, image_size, out);
                pos = end;
                continue;
            }
            Some(Err(e)) => {
                // Blame this `{` only for its own text, up to the next `{`, which gets its own try.
                let own_end = answer[start + 1..].find('{').map_or(answer.len(), |i| start + 1 + i);
                let own = &answer[start..own_end];
                if own.contains("bbox_2d") {
                    let reason = if e.is_eof() {
                        "JSON object is cut off before its closing `}`".to_string()
                    } else {
                        format!("invalid JSON: {e}")
                    };
                    out.problem(own, reason);
                }
            }
            _ => {}
        }
        pos = start + 1;
    }
}

/// One object with `bbox_2d` (or `point_2d`), whose source is `text`.
fn read_object(object: &Map<String, Value>, text: &str, coords: Coords, size: (u32, u32), out: &mut Grounding) {
    let Some(bbox) = object.get("bbox_2d") else {
        return out.problem(text, "`point_2d` marks a point, not a box; skipped");
    };
    let bbox = match corners(bbox).and_then(|raw| place(raw, coords, size)) {
        Ok(bbox) => bbox,
        Err(reason) => return out.problem(text, reason),
    };
    let label = match object.get("label") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::String(_)) => {
            out.problem(text, "empty label; box kept without one");
            None
        }
        Some(other) => {
            out.problem(text, format!("label `{}` is not a string; box kept without one", preview(&other.to_string())));
            None
        }
    };
    out.boxes.push(Detection { label, bbox });
}

/// `[x1, y1, x2, y2]` as written. `Err` is the reason to report.
fn corners(value: &Value) -> Result<[f64; 4], String> {
    let Value::Array(items) = value else {
        return Err(format!("`bbox_2d` must be an array [x1, y1, x2, y2], not `{}`", preview(&value.to_string())));
    };
    if items.len() != 4 {
        return Err(format!("`bbox_2d` has {} values, not 4 [x1, y1, x2, y2]", items.len()));
    }
    let mut raw = [0.0; 4];
    for (r, item) in raw.iter_mut().zip(items) {
        *r =
            item.as_f64().ok_or_else(|| format!("`bbox_2d` value `{}` is not a number", preview(&item.to_string())))?;
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Problem};
    use super::*;

    const SEEN: Coords = Coords::Resized { width: 100, height: 100 };

    fn det(label: Option<&str>, bbox: [f32; 4]) -> Detection {
        Detection { label: label.map(str::to_string), bbox }
    }

    fn problem(text: &str, reason: &str) -> Problem {
        Problem { text: text.into(), reason: reason.into() }
    }

    #[test]
    fn fenced_array_with_text_around() {
        let answer = "Sure! Here they are:\n```json\n[\n  {\"bbox_2d\": [10, 20, 30, 40], \"label\": \"cat\"},\n  \
                      {\"label\": \"dog \", \"bbox_2d\": [50.5, 60, 70, 80.25]}\n]\n```\nAnything else?";
        let g = parse(answer, SEEN, (200, 100));
        assert_eq!(g.problems, []);
        assert_eq!(
            g.boxes,
            [det(Some("cat"), [20.0, 20.0, 60.0, 40.0]), det(Some("dog"), [101.0, 60.0, 140.0, 80.25])]
        );
    }

    #[test]
    fn single_object_nested_object_and_missing_label() {
        let g = parse(r#"{"bbox_2d": [0, 0, 100, 50]}"#, SEEN, (10, 10));
        assert_eq!(g, Grounding { boxes: vec![det(None, [0.0, 0.0, 10.0, 5.0])], problems: vec![] });
        let g = parse(r#"{"objects": [{"bbox_2d": [0, 0, 10, 10], "label": "a", "extra": {"x": 1}}]}"#, SEEN, (10, 10));
        assert_eq!(g.boxes, [det(Some("a"), [0.0, 0.0, 1.0, 1.0])]);
    }

    #[test]
    fn grid_coordinates_in_json() {
        let g = parse(r#"[{"bbox_2d": [100, 200, 500, 1000], "label": "x"}]"#, Coords::Grid1000, (640, 480));
        assert_eq!(g.boxes, [det(Some("x"), [64.0, 96.0, 320.0, 480.0])]);
    }

    #[test]
    fn cut_off_array_keeps_the_complete_objects() {
        let answer = r#"```json
[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6"#;
        let g = parse(answer, SEEN, (100, 100));
        assert_eq!(g.boxes, [det(Some("a"), [1.0, 2.0, 3.0, 4.0])]);
        assert_eq!(g.problems, [problem(r#"{"bbox_2d": [5, 6"#, "JSON object is cut off before its closing `}`")]);
    }

    #[test]
    fn malformed_objects_are_reported_and_skipped() {
        let cases = [
            (r#"{"bbox_2d": [1, 2, 3], "label": "a"}"#, "`bbox_2d` has 3 values, not 4 [x1, y1, x2, y2]"),
            (r#"{"bbox_2d": [1, "2", 3, 4]}"#, "`bbox_2d` value `\"2\"` is not a number"),
            (r#"{"bbox_2d": "1 2 3 4"}"#, "`bbox_2d` must be an array [x1, y1, x2, y2], not `\"1 2 3 4\"`"),
            (r#"{"bbox_2d": [1, 2, 101, 4]}"#, "x2 = 101 is outside the 100x100 model input (x must be 0-100)"),
            (r#"{"bbox_2d": [1, 2, 3, -4.5]}"#, "y2 = -4.5 is outside the 100x100 model input (y must be 0-100)"),
            (r#"{"point_2d": [1, 2], "label": "a"}"#, "`point_2d` marks a point, not a box; skipped"),
            (r#"{"bbox_2d": [1, 2, 3, 4], "label": "a",}"#, "invalid JSON: trailing comma at line 1 column 40"),
            ("{'bbox_2d': [1, 2, 3, 4]}", "invalid JSON: key must be a string at line 1 column 2"),
            ("{bbox_2d}", "invalid JSON: key must be a string at line 1 column 2"),
        ];
        for (answer, reason) in cases {
            let g = parse(answer, SEEN, (100, 100));
            assert_eq!(g, Grounding { boxes: vec![], problems: vec![problem(answer, reason)] }, "{answer}");
        }
    }

    #[test]
    fn bad_labels_keep_the_box_unlabelled() {
        for (answer, reason) in [
            (r#"{"bbox_2d": [1, 2, 3, 4], "label": "  "}"#, "empty label; box kept without one"),
            (r#"{"bbox_2d": [1, 2, 3, 4], "label": 7}"#, "label `7` is not a string; box kept without one"),
        ] {
            let g = parse(answer, SEEN, (100, 100));
            assert_eq!(
                g,
                Grounding { boxes: vec![det(None, [1.0, 2.0, 3.0, 4.0])], problems: vec![problem(answer, reason)] }
            );
        }
    }

    #[test]
    fn braces_in_prose_and_in_labels_are_not_boxes() {
        let answer = r#"Use {curly} braces. [{"bbox_2d": [0, 0, 1, 1], "label": "a {b} c"}] {unrelated"#;
        let g = parse(answer, SEEN, (100, 100));
        assert_eq!(g, Grounding { boxes: vec![det(Some("a {b} c"), [0.0, 0.0, 1.0, 1.0])], problems: vec![] });
    }
}
