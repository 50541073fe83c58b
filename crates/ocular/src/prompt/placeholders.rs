//! Media placeholders: each `<image>` in the prompt text stands for one image and is expanded
//! to as many copies as the image yields feature vectors, before tokenization, as
//! transformers' processors do.

use crate::error::{Error, Result};

/// Replace the i-th `placeholder` in `text` with `expansion(i)`. The number of placeholders must
/// equal `counts`, the number of media items.
pub fn expand(
    text: &str,
    placeholder: &str,
    media: usize,
    kind: &'static str,
    expansion: impl Fn(usize) -> String,
) -> Result<String> {
    let found = text.matches(placeholder).count();
    if found != media {
        return Err(Error::PlaceholderMismatch { placeholders: found, media, token: placeholder.to_string(), kind });
    }
    let mut out = String::with_capacity(text.len());
    for (i, piece) in text.split(placeholder).enumerate() {
        if i > 0 {
            out.push_str(&expansion(i - 1));
        }
        out.push_str(piece);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_each_placeholder_by_its_own_count() {
        let out = expand("a<image>b<image>", "<image>", 2, "image", |i| "<image>".repeat(i + 2)).unwrap();
        assert_eq!(out, "a<image><image>b<image><image><image>");
    }

    #[test]
    fn mismatch_names_both_counts() {
        let e = expand("<image><image>", "<image>", 1, "image", |_| String::new()).unwrap_err().to_string();
        assert_eq!(e, "the prompt has 2 <image> placeholder(s) but 1 image(s) were given");
        let e = expand("no image here", "<image>", 1, "image", |_| String::new()).unwrap_err().to_string();
        assert!(e.contains("has 0 <image> placeholder(s) but 1 image(s)"), "{e}");
    }
}
