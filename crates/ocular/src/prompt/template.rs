//! Chat templates: the Jinja template stored with the model turns a conversation into the
//! prompt text the model was trained on. Rendered the way transformers renders it
//! (`trim_blocks`, `lstrip_blocks`, `raise_exception`, Python string methods).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One part of a message's content, in the shape transformers' processors expect.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    Text { text: String },
    Image,
    Video,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: Vec<Part>,
}

impl Message {
    pub fn new(role: &str, content: Vec<Part>) -> Self {
        Self { role: role.to_string(), content }
    }

    /// A user turn: the images first, then the text, as the LLaVA and Qwen2-VL examples do.
    pub fn user(text: &str, images: usize) -> Self {
        Self::user_with_media(text, images, 0)
    }

    /// A user turn with images, then videos, then the text.
    pub fn user_with_media(text: &str, images: usize, videos: usize) -> Self {
        let mut content = vec![Part::Image; images];
        content.extend(vec![Part::Video; videos]);
        content.push(Part::Text { text: text.to_string() });
        Self::new("user", content)
    }

    pub fn system(text: &str) -> Self {
        Self::new("system", vec![Part::Text { text: text.to_string() }])
    }

    pub fn assistant(text: &str) -> Self {
        Self::new("assistant", vec![Part::Text { text: text.to_string() }])
    }
}

pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
}

impl ChatTemplate {
    pub fn new(source: String) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", strip_generation_tags(&source)).map_err(|e| Error::Template(e.to_string()))?;
        Ok(Self { env })
    }

    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String> {
        let template = self.env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos_token.unwrap_or(""),
                eos_token => eos_token.unwrap_or(""),
            })
            .map_err(|e| Error::Template(format!("{e:#}").lines().next().unwrap_or_default().to_string()))
    }
}

/// transformers' `{% generation %}...{% endgeneration %}` marks assistant text for training
/// masks; rendering ignores it, so the tags are removed (minijinja has no custom block tags).
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let Some(len) = rest[start..].find("%}") else {
            break;
        };
        let tag = &rest[start..start + len + 2];
        let inner =
            tag.trim_start_matches("{%").trim_end_matches("%}").trim_matches(|c: char| c == '-' || c.is_whitespace());
        out.push_str(&rest[..start]);
        if inner != "generation" && inner != "endgeneration" {
            out.push_str(tag);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAVA: &str = "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

    #[test]
    fn renders_a_llava_style_template_with_python_methods() {
        let t = ChatTemplate::new(LLAVA.to_string()).unwrap();
        let out = t.render(&[Message::user("What is this?", 1)], true, Some("<s>"), None).unwrap();
        assert_eq!(out, "USER: <image>\nWhat is this? ASSISTANT:");
    }

    #[test]
    fn generation_tags_are_ignored() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{%- generation -%}[{{ m.role }}]{% endgeneration %}{% endfor %}".into(),
        )
        .unwrap();
        assert_eq!(t.render(&[Message::assistant("x")], false, None, None).unwrap(), "[assistant]");
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}".to_string()).unwrap();
        let e = t.render(&[], false, None, None).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
    }
}
