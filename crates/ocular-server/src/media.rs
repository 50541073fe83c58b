//! Images and videos named in requests: `data:` URLs, `file://` paths inside the folder
//! `--allow-files` names, and `http(s)://` URLs with `--allow-remote` (with size and time
//! limits). Decoding is guarded by the same pixel limit as the CLI's.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ocular::image::{decode_image, load_video, FrameSampling, ImageError, ImageLimits, Video};

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct MediaPolicy {
    /// `file://` URLs must resolve inside this folder.
    pub allow_files: Option<PathBuf>,
    pub allow_remote: bool,
    /// Largest file (bytes) fetched from a URL or sent in a data URL.
    pub max_bytes: u64,
    pub remote_timeout: Duration,
    pub limits: ImageLimits,
    pub max_images: usize,
    /// Frames kept from a video: about this many per second, at most `max_frames`.
    pub video_fps: f64,
    pub max_frames: usize,
}

/// Which part of the request a URL came from, for error messages ("messages[1].content[0]").
pub type Param = String;

/// The bytes an image or video URL names.
pub fn fetch(url: &str, policy: &MediaPolicy, param: &Param) -> Result<Vec<u8>, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_media_url", m).param(param.clone());
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, payload) =
            rest.split_once(',').ok_or_else(|| bad("the data URL has no ',' before its data".into()))?;
        if !meta.ends_with(";base64") {
            return Err(bad("only base64 data URLs are accepted (data:image/png;base64,...)".into()));
        }
        return decode_base64(payload, policy, param);
    }
    if let Some(path) = url.strip_prefix("file://") {
        // `file:///a%20b.png` and `file://localhost/a%20b.png` both name "/a b.png".
        let path = path.strip_prefix("localhost").unwrap_or(path);
        let path = percent_decode(path).ok_or_else(|| bad(format!("{url:?}: a bad %-escape in the path")))?;
        return read_allowed_file(Path::new(&path), policy, param);
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        if !policy.allow_remote {
            return Err(bad("remote URLs are off on this server (start it with --allow-remote)".into()));
        }
        return fetch_remote(url, policy, param);
    }
    let shown: String = url.chars().take(40).collect();
    Err(bad(format!("unsupported URL {shown:?}: use a data: URL, a file:// path or an http(s):// URL")))
}

/// A URL path with its `%XX` escapes decoded; `None` for a bad escape or a path that is not
/// UTF-8 once decoded.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Base64 (standard alphabet, padding optional, whitespace ignored), within the size limit.
pub fn decode_base64(payload: &str, policy: &MediaPolicy, param: &Param) -> Result<Vec<u8>, ApiError> {
    if payload.len() as u64 > policy.max_bytes * 4 / 3 + 4 {
        return Err(too_big(policy, param));
    }
    let clean: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(clean.trim_end_matches('=')))
        .map_err(|e| {
            ApiError::bad_request("invalid_base64", format!("the image data is not valid base64: {e}"))
                .param(param.clone())
        })
}

fn too_big(policy: &MediaPolicy, param: &Param) -> ApiError {
    ApiError::too_large("media_too_large", format!("the media is larger than the limit of {} bytes", policy.max_bytes))
        .param(param.clone())
}

fn read_allowed_file(path: &Path, policy: &MediaPolicy, param: &Param) -> Result<Vec<u8>, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_media_url", m).param(param.clone());
    let Some(root) = &policy.allow_files else {
        return Err(bad("file:// URLs are off on this server (start it with --allow-files DIR)".into()));
    };
    let resolved = resolve_inside(path, root).map_err(bad)?;
    let size = std::fs::metadata(&resolved).map_err(|e| bad(format!("{}: {e}", path.display())))?.len();
    if size > policy.max_bytes {
        return Err(too_big(policy, param));
    }
    std::fs::read(&resolved).map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// The real path of `path` when it lies inside `root` (after resolving `..` and links).
pub fn resolve_inside(path: &Path, root: &Path) -> Result<PathBuf, String> {
    let root = root.canonicalize().map_err(|e| format!("--allow-files {}: {e}", root.display()))?;
    let real = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
    if real.starts_with(&root) {
        Ok(real)
    } else {
        Err(format!("{} is outside the folder this server may read ({})", path.display(), root.display()))
    }
}

fn fetch_remote(url: &str, policy: &MediaPolicy, param: &Param) -> Result<Vec<u8>, ApiError> {
    let bad = |m: String| ApiError::bad_request("media_fetch_failed", m).param(param.clone());
    let agent = ureq::AgentBuilder::new().timeout(policy.remote_timeout).redirects(3).build();
    let response = agent.get(url).call().map_err(|e| bad(format!("fetching {url}: {e}")))?;
    if let Some(len) = response.header("content-length").and_then(|v| v.parse::<u64>().ok()) {
        if len > policy.max_bytes {
            return Err(too_big(policy, param));
        }
    }
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(policy.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("reading {url}: {e}")))?;
    if bytes.len() as u64 > policy.max_bytes {
        return Err(too_big(policy, param));
    }
    Ok(bytes)
}

/// Decodes an image; too many pixels is 413, anything else wrong with it 400.
pub fn decode(bytes: &[u8], policy: &MediaPolicy, param: &Param) -> Result<::image::RgbImage, ApiError> {
    decode_image(bytes, param, &policy.limits).map_err(|e| media_error(e, param))
}

fn media_error(e: ImageError, param: &Param) -> ApiError {
    let status_413 = matches!(e, ImageError::TooManyPixels { .. });
    let message = e.to_string();
    if status_413 {
        ApiError::too_large("image_too_large", message).param(param.clone())
    } else {
        ApiError::bad_request("invalid_image", message).param(param.clone())
    }
}

/// A video from its bytes (an animated GIF, or any container ffmpeg reads), through a
/// temporary file the video loader reads.
pub fn decode_video(bytes: &[u8], policy: &MediaPolicy, param: &Param) -> Result<Video, ApiError> {
    let dir = std::env::temp_dir().join(format!("ocular-serve-{}-{}", std::process::id(), unique()));
    let written = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(dir.join("video"), bytes));
    let result =
        written.map_err(|e| ApiError::internal(format!("cannot write a temporary file: {e}"))).and_then(|_| {
            let sampling =
                FrameSampling { fps: Some(policy.video_fps), max_frames: Some(policy.max_frames), source_fps: None };
            load_video(&dir.join("video"), &policy.limits, &sampling).map_err(|e| media_error(e, param))
        });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn file_url_paths_decode_their_escapes() {
        assert_eq!(percent_decode("/a%20b/%C3%A9t%c3%a9.png").as_deref(), Some("/a b/été.png"));
        assert_eq!(percent_decode("/plain.png").as_deref(), Some("/plain.png"));
        assert_eq!(percent_decode("/bad%2"), None);
        assert_eq!(percent_decode("/bad%zz"), None);
        assert_eq!(percent_decode("/bad%+1"), None);
        assert_eq!(percent_decode("/not-utf8%ff"), None);
    }
}
