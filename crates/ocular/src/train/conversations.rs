//! Fine-tuning on the user's own data: conversations about images and videos in LLaVA's
//! instruction-tuning format, a JSON array (or JSON Lines, one entry a line) of entries like
//!
//! ```json
//! {"id": "7", "image": "cat.png",
//!  "conversations": [{"from": "human", "value": "<image>\nWhat is on the mat?"},
//!                    {"from": "gpt", "value": "A cat."}]}
//! ```
//!
//! `image` and `video` each take a path or a list of paths (a video: a GIF, a video file or a
//! folder of frames), relative to the media folder (the data file's own folder unless the
//! config names one). Each `<image>` or `<video>` tag in a human turn places the next one there;
//! with no tags, all of them open the first human turn (LLaVA's convention). Turns may also be
//! written `{"role": "user" | "assistant" | "system", "content": "..."}`. Every assistant turn
//! is an answer to learn.
//!
//! The whole file is checked when it is opened (structure, roles, tags against media, each
//! image's header), so a run never stops hours in on a bad entry; each error names the file, the
//! entry and the field. Pixels are decoded when a step draws the entry.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::image::{load_image, load_video, probe_image, FrameSampling, ImageLimits};
use crate::models::Media;
use crate::prompt::{Message, Part};
use crate::rng::Rng;
use serde::Deserialize;

/// `[conversations]` in a training config: fine-tune on these files instead of the scenes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConversationsConfig {
    /// The conversations to learn from: a JSON array or JSON Lines file in LLaVA's format.
    pub train: Option<PathBuf>,
    /// Held-out conversations, whose first `optim.eval_examples` give the held-out loss every
    /// `optim.eval_every` steps.
    pub eval: Option<PathBuf>,
    /// Where entries' image and video paths are looked up (default: each data file's folder).
    pub media_folder: Option<PathBuf>,
    /// A longer conversation keeps only the turns that end within this many tokens.
    pub max_tokens: usize,
    /// Frames kept from each video, evenly spaced.
    pub video_frames: usize,
    /// Pixels per image at most, for the families that take any resolution (Qwen2-VL); their
    /// processor's own limit otherwise.
    pub max_pixels: Option<u64>,
    /// The largest image file accepted, in pixels (checked from its header, before decoding):
    /// `--max-image-pixels` of the other commands.
    pub max_image_pixels: u64,
}

impl Default for ConversationsConfig {
    fn default() -> Self {
        Self {
            train: None,
            eval: None,
            media_folder: None,
            max_tokens: 4096,
            video_frames: 8,
            max_pixels: None,
            max_image_pixels: ImageLimits::default().max_pixels,
        }
    }
}

impl ConversationsConfig {
    /// Conversations fine-tune a base (`has_base`), with none of the scenes' auxiliary heads
    /// (`head_setting`: the first one the config asks for).
    pub fn validate(&self, has_base: bool, head_setting: Option<&str>) -> std::result::Result<(), String> {
        let Some(train) = &self.train else {
            return match &self.eval {
                Some(eval) => {
                    Err(format!("conversations.eval ({}) is set without conversations.train", eval.display()))
                }
                None => Ok(()),
            };
        };
        let train = train.display();
        if !has_base {
            return Err(format!(
                "conversations.train ({train}) fine-tunes a model: set base to its folder (a new model learns from the scenes)"
            ));
        }
        if let Some(setting) = head_setting {
            return Err(format!(
                "{setting} learns from the scenes' labels, which conversations.train ({train}) does not have: leave it out"
            ));
        }
        if self.max_tokens == 0 || self.video_frames == 0 || self.max_pixels == Some(0) || self.max_image_pixels == 0 {
            return Err(
                "conversations.max_tokens, video_frames, max_pixels and max_image_pixels must be at least 1".into()
            );
        }
        Ok(())
    }

    pub fn image_limits(&self) -> ImageLimits {
        ImageLimits { max_pixels: self.max_image_pixels }
    }
}

/// One conversation, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// How errors name it: "entry 3 (id \"7\")", or "line 3" of a JSON Lines file.
    pub name: String,
    pub images: Vec<PathBuf>,
    pub videos: Vec<PathBuf>,
    /// An optional system turn, then user and assistant turns in turn, ending with an answer.
    pub messages: Vec<Message>,
}

/// The entries of one data file.
#[derive(Debug, Clone)]
pub struct Conversations {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

impl Conversations {
    /// Reads and checks every entry of `path`; media paths are relative to `media_folder`, or
    /// to the file's own folder. Images over `limits` are refused here.
    pub fn open(path: &Path, media_folder: Option<&Path>, limits: &ImageLimits) -> Result<Self> {
        let fail = |message: String| Error::model_file(path, message);
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        // Editors on Windows may save UTF-8 with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let folder = media_folder.or(path.parent()).unwrap_or(Path::new("")).to_path_buf();
        let values: Vec<(String, Value)> = if text.trim_start().starts_with('[') {
            let array: Vec<Value> =
                serde_json::from_str(&text).map_err(|e| fail(format!("not a JSON array of entries: {e}")))?;
            array.into_iter().enumerate().map(|(i, v)| (format!("entry {}", i + 1), v)).collect()
        } else {
            let lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
            lines
                .map(|(i, line)| {
                    let value = serde_json::from_str(line)
                        .map_err(|e| fail(format!("line {}: not a JSON entry: {e}", i + 1)))?;
                    Ok((format!("line {}", i + 1), value))
                })
                .collect::<Result<_>>()?
        };
        if values.is_empty() {
            return Err(fail("no entries".into()));
        }
        let entries = values
            .into_iter()
            .map(|(at, value)| entry(&at, &value, &folder, limits).map_err(&fail))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { path: path.to_path_buf(), entries })
    }

    /// The entries of optimiser step `step`, `n` of them: each epoch walks the file in its own
    /// seeded order, so any step can be redone and every entry is seen once an epoch.
    pub fn draw(&self, seed: u64, step: usize, n: usize) -> Vec<&Entry> {
        let len = self.entries.len();
        let mut order: Option<(usize, Vec<usize>)> = None;
        (step * n..(step + 1) * n)
            .map(|i| {
                let epoch = i / len;
                if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    let mut indices: Vec<usize> = (0..len).collect();
                    Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).shuffle(&mut indices);
                    order = Some((epoch, indices));
                }
                &self.entries[order.as_ref().expect("set above").1[i % len]]
            })
            .collect()
    }
}

/// A run's conversations: those it learns from, and the held-out ones.
pub struct Dataset {
    pub settings: ConversationsConfig,
    pub train: Conversations,
    pub eval: Option<Conversations>,
}

impl Dataset {
    /// Opens and checks the files `settings` names; `None` when it names none (the run learns
    /// from the scenes).
    pub fn open(settings: &ConversationsConfig) -> Result<Option<Self>> {
        let Some(train) = &settings.train else { return Ok(None) };
        let folder = settings.media_folder.as_deref();
        let limits = settings.image_limits();
        let train = Conversations::open(train, folder, &limits)?;
        let eval = settings.eval.as_deref().map(|p| Conversations::open(p, folder, &limits)).transpose()?;
        Ok(Some(Self { settings: settings.clone(), train, eval }))
    }

    /// For a model that takes no videos: refuses the first entry that has one.
    pub fn refuse_videos(&self, family: &str) -> Result<()> {
        for file in std::iter::once(&self.train).chain(&self.eval) {
            if let Some(entry) = file.entries.iter().find(|e| !e.videos.is_empty()) {
                let message = format!("{}: has a video, which a {family} model does not take", entry.name);
                return Err(Error::model_file(&file.path, message));
            }
        }
        Ok(())
    }

    /// An entry's images and videos, decoded.
    pub fn media(&self, entry: &Entry) -> Result<Media> {
        let limits = self.settings.image_limits();
        let sampling = FrameSampling { max_frames: Some(self.settings.video_frames), ..Default::default() };
        Ok(Media {
            images: entry.images.iter().map(|p| load_image(p, &limits)).collect::<Result<_, _>>()?,
            videos: entry.videos.iter().map(|p| load_video(p, &limits, &sampling)).collect::<Result<_, _>>()?,
            min_pixels: None,
            max_pixels: self.settings.max_pixels,
        })
    }
}

fn entry(at: &str, value: &Value, folder: &Path, limits: &ImageLimits) -> std::result::Result<Entry, String> {
    let object = value.as_object().ok_or_else(|| format!("{at}: expected a JSON object, found {}", kind(value)))?;
    let name = match object.get("id") {
        Some(Value::String(id)) => format!("{at} (id {id:?})"),
        Some(id @ Value::Number(_)) => format!("{at} (id {id})"),
        _ => at.to_string(),
    };
    let images = paths(object, "image", &name, folder)?;
    let videos = paths(object, "video", &name, folder)?;
    for path in &images {
        probe_image(path, limits).map_err(|e| format!("{name}: image: {e}"))?;
    }
    if let Some(missing) = videos.iter().find(|p| !p.exists()) {
        return Err(format!("{name}: video {}: no such file or folder", missing.display()));
    }
    let (key, turns) = ["conversations", "messages"]
        .iter()
        .find_map(|k| object.get(*k).map(|v| (*k, v)))
        .ok_or_else(|| format!("{name}: no \"conversations\" (or \"messages\") list"))?;
    let turns = turns
        .as_array()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("{name}: \"{key}\" must be a non-empty list of turns, found {}", kind(turns)))?;
    let mut messages = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let field = format!("{name}: {key}[{i}]");
        let (role, text) = role_and_text(turn).map_err(|e| format!("{field}: {e}"))?;
        let expected = match messages.len() {
            0 if role == "system" => "system",
            _ if role == "system" => return Err(format!("{field}: a system turn may only come first")),
            _ if messages.last().is_some_and(|m: &Message| m.role == "user") => "assistant",
            _ => "user",
        };
        if role != expected {
            let a = |role: &str| if role == "assistant" { "an assistant" } else { "a user" };
            return Err(format!(
                "{field}: {} turn where {} turn was expected (turns alternate, human first)",
                a(role),
                a(expected)
            ));
        }
        if let Some(tag) = ["<image>", "<video>"].into_iter().find(|tag| role != "user" && text.contains(tag)) {
            let turn = if role == "assistant" { "gpt" } else { "system" };
            return Err(format!("{field}: a {tag} tag in a {turn} turn (media go in human turns)"));
        }
        messages.push(match role {
            "user" => Message::new("user", parts(text)),
            _ => Message::new(role, vec![Part::Text { text: text.to_string() }]),
        });
    }
    if messages.last().is_some_and(|m| m.role != "assistant") {
        return Err(format!("{name}: the last turn has no answer after it (a conversation ends with a gpt turn)"));
    }
    place_media(&mut messages, images.len(), videos.len()).map_err(|e| format!("{name}: {e}"))?;
    Ok(Entry { name, images, videos, messages })
}

/// `object[key]`: absent, a path, or a list of paths, each joined to `folder`.
fn paths(
    object: &Map<String, Value>,
    key: &str,
    name: &str,
    folder: &Path,
) -> std::result::Result<Vec<PathBuf>, String> {
    let bad = |v: &Value| format!("{name}: \"{key}\" must be a path or a list of paths, found {}", kind(v));
    match object.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(p)) => Ok(vec![folder.join(p)]),
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map(|p| folder.join(p)).ok_or_else(|| bad(v))).collect()
        }
        Some(other) => Err(bad(other)),
    }
}

/// A turn's role (user, assistant or system) and text, from LLaVA's `from`/`value` or the
/// `role`/`content` spelling.
fn role_and_text(turn: &Value) -> std::result::Result<(&'static str, &str), String> {
    let get = |k: &str| turn.get(k);
    let (role, text, role_key, text_key) = match (get("from"), get("role")) {
        (Some(r), _) => (r, get("value"), "from", "value"),
        (None, Some(r)) => (r, get("content"), "role", "content"),
        (None, None) => {
            return Err(format!("expected {{\"from\", \"value\"}} or {{\"role\", \"content\"}}, found {}", kind(turn)))
        }
    };
    let role = match role.as_str() {
        Some("human" | "user") => "user",
        Some("gpt" | "assistant") => "assistant",
        Some("system") => "system",
        _ => return Err(format!("\"{role_key}\" must be human, gpt or system (or user, assistant), found {role}")),
    };
    let text = text.and_then(Value::as_str).ok_or_else(|| format!("\"{text_key}\" must be a string"))?;
    Ok((role, text))
}

/// A human turn's content: its text split at `<image>` and `<video>` tags. The turn's text is
/// trimmed where it begins and ends (media before or after it included: "<image>\nWhat is
/// it?" reads as a prompt typed after its image would); text between tags keeps its spaces.
fn parts(text: &str) -> Vec<Part> {
    let mut pieces: Vec<Part> = vec![];
    let mut rest = text;
    loop {
        let next = [("<image>", Part::Image), ("<video>", Part::Video)]
            .into_iter()
            .filter_map(|(tag, part)| rest.find(tag).map(|at| (at, tag.len(), part)))
            .min_by_key(|(at, ..)| *at);
        let (before, after) = match &next {
            Some((at, len, _)) => (&rest[..*at], &rest[at + len..]),
            None => (rest, ""),
        };
        if !before.trim().is_empty() {
            pieces.push(Part::Text { text: before.to_string() });
        }
        match next {
            Some((.., part)) => pieces.push(part),
            None => break,
        }
        rest = after;
    }
    let is_text = |p: &Part| matches!(p, Part::Text { .. });
    let (first, last) = (pieces.iter().position(is_text), pieces.iter().rposition(is_text));
    if let Some(Part::Text { text }) = first.map(|i| &mut pieces[i]) {
        *text = text.trim_start().to_string();
    }
    if let Some(Part::Text { text }) = last.map(|i| &mut pieces[i]) {
        *text = text.trim_end().to_string();
    }
    pieces
}

/// Checks the tags against the entry's media; with no tags at all, puts the media at the start
/// of the first human turn.
fn place_media(messages: &mut [Message], images: usize, videos: usize) -> std::result::Result<(), String> {
    let count = |wanted: &Part| messages.iter().flat_map(|m| &m.content).filter(|p| *p == wanted).count();
    let (image_tags, video_tags) = (count(&Part::Image), count(&Part::Video));
    // LLaVA-Video's data marks its videos with <image>.
    if images == 0 && video_tags == 0 && image_tags == videos {
        for part in messages.iter_mut().flat_map(|m| &mut m.content).filter(|p| **p == Part::Image) {
            *part = Part::Video;
        }
        return Ok(());
    }
    if image_tags + video_tags == 0 {
        let first = messages.iter_mut().find(|m| m.role == "user").expect("a conversation has a human turn");
        let media = std::iter::repeat_n(Part::Image, images).chain(std::iter::repeat_n(Part::Video, videos));
        first.content.splice(0..0, media);
        return Ok(());
    }
    for (tag, tags, given) in [("<image>", image_tags, images), ("<video>", video_tags, videos)] {
        if tags != given {
            return Err(format!("{tags} {tag} tag(s) in its turns but {given} {} given", &tag[1..tag.len() - 1]));
        }
    }
    Ok(())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[path = "conversations_tests.rs"]
mod tests;
