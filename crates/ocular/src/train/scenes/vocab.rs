//! The words of the scene world: shapes, colours and sizes, each with exactly one canonical
//! name, as in CLEVR's fixed attribute vocabulary (Johnson et al., 2017).
//!
//! Answers are always these names, lowercase; questions may spell them differently (colour and
//! color) but no name here has a spelling variant, which keeps answers exact-matchable.

/// An object's outline. All are drawn upright, so square and diamond stay distinct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Diamond,
}

impl Shape {
    pub const ALL: [Shape; 5] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Star, Shape::Diamond];

    /// Canonical singular name, e.g. "circle".
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Diamond => "diamond",
        }
    }

    /// Plural used in counting questions; every name here takes a plain "s".
    pub fn plural(self) -> String {
        format!("{}s", self.name())
    }
}

/// A named colour. Chosen far apart in RGB so that jitter and anti-aliased edges never make one
/// look like another, and none of them is grey, the family backgrounds are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
    Cyan,
}

impl Colour {
    pub const ALL: [Colour; 7] =
        [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow, Colour::Purple, Colour::Orange, Colour::Cyan];

    /// Canonical name, e.g. "red".
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
            Colour::Cyan => "cyan",
        }
    }

    /// Reference RGB; objects get this plus a small per-object jitter.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [210, 35, 45],
            Colour::Green => [45, 170, 60],
            Colour::Blue => [45, 90, 225],
            Colour::Yellow => [240, 215, 40],
            Colour::Purple => [145, 65, 190],
            Colour::Orange => [245, 125, 20],
            Colour::Cyan => [40, 195, 210],
        }
    }
}

/// Two sizes with a wide gap between their radius bands (see `layout::radius_for`), so "small"
/// and "large" are never a judgement call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Size {
    Small,
    Large,
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

/// Direction of motion in video examples, named as the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Left,
    Right,
    Up,
    Down,
}

impl Direction {
    pub const ALL: [Direction; 4] = [Direction::Left, Direction::Right, Direction::Up, Direction::Down];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Left => "left",
            Direction::Right => "right",
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }

    /// Unit step in image coordinates (y grows downwards).
    pub fn step(self) -> [f32; 2] {
        match self {
            Direction::Left => [-1.0, 0.0],
            Direction::Right => [1.0, 0.0],
            Direction::Up => [0.0, -1.0],
            Direction::Down => [0.0, 1.0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_far_apart_and_names_unique() {
        for (i, a) in Colour::ALL.iter().enumerate() {
            for b in &Colour::ALL[i + 1..] {
                let d: i32 = a.rgb().iter().zip(b.rgb()).map(|(&x, y)| (x as i32 - y as i32).pow(2)).sum();
                assert!(d >= 80 * 80, "{a:?} and {b:?} are too close: {}", (d as f64).sqrt());
                assert_ne!(a.name(), b.name());
            }
        }
        let mut names: Vec<&str> = Shape::ALL.iter().map(|s| s.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Shape::ALL.len());
        assert_eq!(Shape::Diamond.plural(), "diamonds");
    }
}
