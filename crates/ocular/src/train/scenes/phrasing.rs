//! Question wording. Each question type has many templates (synonyms, colour/color, with and
//! without articles, short and long, polite forms), and [`surface`] then varies casing and the
//! final punctuation, so the model learns the task rather than one string. Answers never vary:
//! they are built elsewhere, from the canonical vocabulary.
//!
//! Placeholders: `{o}` an object ("red circle"), `{s}` a shape, `{c}` a colour, `{p}` a plural
//! shape ("circles").

use super::layout::Relation;
use crate::rng::Rng;

const CAPTION: &[&str] = &[
    "Describe the image.",
    "Describe this image.",
    "Describe the picture.",
    "Please describe the image.",
    "What is in the image?",
    "What do you see in this picture?",
    "What can you see?",
    "Give a short description of the image.",
    "Caption this image.",
    "Write a caption for the picture.",
    "List the objects from left to right.",
    "Could you describe this image for me?",
];

const COLOUR_OF: &[&str] = &[
    "What colour is the {s}?",
    "What color is the {s}?",
    "What is the colour of the {s}?",
    "What is the color of the {s}?",
    "Which colour is the {s}?",
    "What colour is {s}?",
    "Colour of the {s}?",
    "Color of {s}?",
    "Please tell me the colour of the {s}.",
    "Can you tell me what color the {s} is?",
    "The {s} is what colour?",
    "What colour does the {s} have?",
];

const SHAPE_OF: &[&str] = &[
    "What shape is the {c} object?",
    "What shape is the {c} thing?",
    "What is the shape of the {c} object?",
    "What kind of shape is the {c} one?",
    "Which shape is {c}?",
    "What shape is {c}?",
    "Shape of the {c} object?",
    "Please tell me the shape of the {c} item.",
    "What type of shape is the {c} object?",
    "Can you tell me what shape the {c} object is?",
];

const EXISTS: &[&str] = &[
    "Is there a {o}?",
    "Is there a {o} in the image?",
    "Is there any {o} in the picture?",
    "Does the image contain a {o}?",
    "Does the picture show a {o}?",
    "Can you see a {o}?",
    "Do you see a {o} here?",
    "Any {o}?",
    "Please tell me whether there is a {o}.",
    "Is a {o} present?",
];

const SIZE_OF: &[&str] = &[
    "What size is the {o}?",
    "Is the {o} small or large?",
    "Is the {o} large or small?",
    "How big is the {o}?",
    "What is the size of the {o}?",
    "Size of the {o}?",
    "Please tell me the size of the {o}.",
    "Is {o} small or large?",
];

const COUNT_ALL: &[&str] = &[
    "How many objects are there?",
    "How many objects are in the image?",
    "How many shapes are there?",
    "How many things can you see?",
    "Count the objects.",
    "Count the shapes in the picture.",
    "Count objects.",
    "What is the number of objects?",
    "Number of objects?",
    "Please count the objects in the image.",
    "How many items are in this picture?",
];

const COUNT_SHAPE: &[&str] = &[
    "How many {p} are there?",
    "How many {p} are in the image?",
    "How many {p} can you see?",
    "Count the {p}.",
    "Count {p}.",
    "What is the number of {p}?",
    "Number of {p}?",
    "Please count the {p} in the picture.",
    "How many {p} does the image contain?",
];

const COUNT_COLOUR: &[&str] = &[
    "How many {c} objects are there?",
    "How many {c} things are in the image?",
    "How many {c} shapes can you see?",
    "Count the {c} objects.",
    "Count {c} shapes.",
    "What is the number of {c} objects?",
    "Number of {c} items?",
    "Please count the {c} objects in the picture.",
];

const LEFT: &[&str] = &[
    "What is to the left of the {o}?",
    "What is left of the {o}?",
    "Which object is on the left of the {o}?",
    "What object lies to the left of the {o}?",
    "What is left of {o}?",
    "Name the object to the left of the {o}.",
    "Please tell me what is to the left of the {o}.",
    "Which shape is left of the {o}?",
];

const RIGHT: &[&str] = &[
    "What is to the right of the {o}?",
    "What is right of the {o}?",
    "Which object is on the right of the {o}?",
    "What object lies to the right of the {o}?",
    "What is right of {o}?",
    "Name the object to the right of the {o}.",
    "Please tell me what is to the right of the {o}.",
    "Which shape is right of the {o}?",
];

const ABOVE: &[&str] = &[
    "What is above the {o}?",
    "Which object is above the {o}?",
    "What object lies above the {o}?",
    "What is above {o}?",
    "Name the object above the {o}.",
    "Please tell me what is above the {o}.",
    "Which shape is higher up than the {o}?",
];

const BELOW: &[&str] = &[
    "What is below the {o}?",
    "What is beneath the {o}?",
    "Which object is under the {o}?",
    "What object lies below the {o}?",
    "What is below {o}?",
    "Name the object beneath the {o}.",
    "Please tell me what is below the {o}.",
    "Which shape is lower down than the {o}?",
];

const NEAREST: &[&str] = &[
    "What is the nearest object to the {o}?",
    "What is the closest object to the {o}?",
    "Which object is closest to the {o}?",
    "Which shape is nearest to the {o}?",
    "What is nearest the {o}?",
    "What is closest to {o}?",
    "Name the object nearest to the {o}.",
    "Please tell me which object is closest to the {o}.",
];

const FARTHEST: &[&str] = &[
    "What is the farthest object from the {o}?",
    "What is the furthest object from the {o}?",
    "Which object is farthest from the {o}?",
    "Which shape is furthest from the {o}?",
    "What is most distant from the {o}?",
    "What is farthest from {o}?",
    "Name the object furthest from the {o}.",
    "Please tell me which object is farthest away from the {o}.",
];

const LOCATE: &[&str] = &[
    "Locate the {o}.",
    "Locate {o}.",
    "Where is the {o}?",
    "Find the {o}.",
    "Find the {o} and give its bounding box.",
    "Give the bounding box of the {o}.",
    "Output the bounding box of the {o}.",
    "Detect the {o}.",
    "Please locate the {o} in the image.",
    "Show me where the {o} is.",
    "Point out the {o} with a box.",
];

const MORE_SHAPE: &[&str] = &[
    "Which image has more {p}?",
    "Which of the two images has more {p}?",
    "Which picture contains more {p}?",
    "In which image are there more {p}?",
    "Which image shows a larger number of {p}?",
    "Which image has more {p}, the first or the second?",
    "More {p}: first or second image?",
    "Please tell me which image has more {p}.",
];

const MORE_OBJECTS: &[&str] = &[
    "Which image has more objects?",
    "Which of the two images contains more shapes?",
    "Which picture has more things in it?",
    "In which image are there more objects?",
    "Which image is more crowded, the first or the second?",
    "More objects: first or second image?",
    "Please tell me which image has more objects.",
];

const BOTH_COLOUR: &[&str] = &[
    "Do both images contain a {c} object?",
    "Do both images contain a {c} shape?",
    "Is there a {c} object in both images?",
    "Does each image have something {c}?",
    "Do both pictures include a {c} object?",
    "Is there something {c} in each picture?",
    "{c} object in both images?",
    "Please tell me whether both images contain a {c} object.",
];

const DIRECTION: &[&str] = &[
    "Which way does the {o} move?",
    "In which direction does the {o} move?",
    "Which direction is the {o} moving in?",
    "Where is the {o} going?",
    "Is the {o} moving left, right, up or down?",
    "Which way is the {o} travelling?",
    "Which way is the {o} traveling?",
    "Direction of the {o}?",
    "Please tell me which way the {o} moves.",
    "In what direction is {o} heading?",
];

/// Varies the surface of a filled template: casing (as written, all lowercase, first letter
/// lowercase, all caps) and whether the final punctuation stays.
pub fn surface(rng: &mut Rng, text: &str) -> String {
    let mut s = match rng.weighted(&[70, 15, 10, 5]) {
        0 => {
            let mut c = text.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
        }
        1 => text.to_lowercase(),
        2 => {
            let mut c = text.chars();
            c.next().map(|f| f.to_lowercase().chain(c).collect()).unwrap_or_default()
        }
        _ => text.to_uppercase(),
    };
    if rng.chance(0.15) {
        while s.ends_with(['?', '.']) {
            s.pop();
        }
    }
    s
}

/// Picks a template, fills it, and varies its surface.
fn fill(rng: &mut Rng, templates: &[&str], slots: &[(&str, &str)]) -> String {
    let mut t = rng.pick(templates).to_string();
    for (key, value) in slots {
        t = t.replace(key, value);
    }
    surface(rng, &with_articles(&t))
}

/// "a" becomes "an" before a vowel ("an orange circle"), as a person would type it.
fn with_articles(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let vowel = |w: Option<&&str>| w.and_then(|w| w.chars().next()).is_some_and(|c| "aeiouAEIOU".contains(c));
    let fixed: Vec<&str> = words
        .iter()
        .enumerate()
        .map(|(i, &w)| match w {
            "a" if vowel(words.get(i + 1)) => "an",
            "A" if vowel(words.get(i + 1)) => "An",
            _ => w,
        })
        .collect();
    fixed.join(" ")
}

pub fn caption(rng: &mut Rng) -> String {
    fill(rng, CAPTION, &[])
}

pub fn colour_of(rng: &mut Rng, shape: &str) -> String {
    fill(rng, COLOUR_OF, &[("{s}", shape)])
}

pub fn shape_of(rng: &mut Rng, colour: &str) -> String {
    fill(rng, SHAPE_OF, &[("{c}", colour)])
}

pub fn exists(rng: &mut Rng, object: &str) -> String {
    fill(rng, EXISTS, &[("{o}", object)])
}

pub fn size_of(rng: &mut Rng, object: &str) -> String {
    fill(rng, SIZE_OF, &[("{o}", object)])
}

pub fn count_all(rng: &mut Rng) -> String {
    fill(rng, COUNT_ALL, &[])
}

pub fn count_shape(rng: &mut Rng, plural: &str) -> String {
    fill(rng, COUNT_SHAPE, &[("{p}", plural)])
}

pub fn count_colour(rng: &mut Rng, colour: &str) -> String {
    fill(rng, COUNT_COLOUR, &[("{c}", colour)])
}

pub fn relation(rng: &mut Rng, relation: Relation, anchor: &str) -> String {
    let templates = match relation {
        Relation::LeftOf => LEFT,
        Relation::RightOf => RIGHT,
        Relation::Above => ABOVE,
        Relation::Below => BELOW,
        Relation::Nearest => NEAREST,
        Relation::Farthest => FARTHEST,
    };
    fill(rng, templates, &[("{o}", anchor)])
}

pub fn locate(rng: &mut Rng, object: &str) -> String {
    fill(rng, LOCATE, &[("{o}", object)])
}

pub fn more_shape(rng: &mut Rng, plural: &str) -> String {
    fill(rng, MORE_SHAPE, &[("{p}", plural)])
}

pub fn more_objects(rng: &mut Rng) -> String {
    fill(rng, MORE_OBJECTS, &[])
}

pub fn both_colour(rng: &mut Rng, colour: &str) -> String {
    fill(rng, BOTH_COLOUR, &[("{c}", colour)])
}

pub fn direction(rng: &mut Rng, object: &str) -> String {
    fill(rng, DIRECTION, &[("{o}", object)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surface_varies_case_and_punctuation_only() {
        let mut rng = Rng::seed_from_u64(5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            let s = surface(&mut rng, "what colour is the red circle?");
            assert_eq!(s.to_lowercase().trim_end_matches('?'), "what colour is the red circle");
            seen.insert(s);
        }
        // As written (capitalised), lower, ALL CAPS, each with and without "?".
        assert!(seen.contains("What colour is the red circle?"));
        assert!(seen.contains("what colour is the red circle"));
        assert!(seen.contains("WHAT COLOUR IS THE RED CIRCLE?"));
    }

    #[test]
    fn an_goes_before_a_vowel() {
        assert_eq!(with_articles("Is there a orange star?"), "Is there an orange star?");
        assert_eq!(with_articles("A orange one, a red one and a apple"), "An orange one, a red one and an apple");
        let mut rng = Rng::seed_from_u64(3);
        for _ in 0..200 {
            let q = exists(&mut rng, "orange circle").to_lowercase();
            assert!(!q.contains("a orange") && q.contains("orange circle"), "{q}");
            let q = both_colour(&mut rng, "orange").to_lowercase();
            assert!(!q.contains("a orange"), "{q}");
        }
    }

    #[test]
    fn every_template_uses_its_slot() {
        for (templates, key) in [
            (COLOUR_OF, "{s}"),
            (SHAPE_OF, "{c}"),
            (EXISTS, "{o}"),
            (SIZE_OF, "{o}"),
            (COUNT_SHAPE, "{p}"),
            (COUNT_COLOUR, "{c}"),
            (LEFT, "{o}"),
            (RIGHT, "{o}"),
            (ABOVE, "{o}"),
            (BELOW, "{o}"),
            (NEAREST, "{o}"),
            (FARTHEST, "{o}"),
            (LOCATE, "{o}"),
            (MORE_SHAPE, "{p}"),
            (BOTH_COLOUR, "{c}"),
            (DIRECTION, "{o}"),
        ] {
            for t in templates {
                assert_eq!(t.matches(key).count(), 1, "{t}");
            }
        }
    }
}
