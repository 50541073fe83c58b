//! Video files through the `ffprobe` and `ffmpeg` programs (when installed): the stream's size,
//! rate and frame count, then its frames as raw RGB24 through a pipe. Rotation metadata is not
//! applied (`-noautorotate`), as transformers' video readers do not apply it either.

use std::io::{ErrorKind, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use ::image::RgbImage;
use serde_json::Value;

use super::ImageError;

/// Which programs to run; tests swap in a missing one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tools {
    pub ffmpeg: &'static str,
    pub ffprobe: &'static str,
}

pub(super) const TOOLS: Tools = Tools { ffmpeg: "ffmpeg", ffprobe: "ffprobe" };

/// What ffprobe says about the first video stream.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Probe {
    pub width: u32,
    pub height: u32,
    /// The average frame rate, else the container's base rate; `None` when neither is known.
    pub fps: Option<f64>,
    /// Packets counted by demuxing (no decoding), which is one per frame for video codecs.
    pub frames: Option<usize>,
}

pub(super) fn probe(tools: Tools, path: &Path, name: &str) -> Result<Probe, ImageError> {
    let entries = "stream=width,height,avg_frame_rate,r_frame_rate,nb_read_packets,nb_frames";
    let mut cmd = Command::new(tools.ffprobe);
    cmd.args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args(["-show_entries", entries, "-of", "json", "-i"])
        .arg(path);
    let output = cmd.stdin(Stdio::null()).output().map_err(|e| spawn_error(e, name))?;
    if !output.status.success() {
        return Err(failed(name, &output.stderr, "ffprobe failed"));
    }
    let json: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| failed(name, &[], &format!("unreadable ffprobe output: {e}")))?;
    let stream = &json["streams"][0];
    let int = |key: &str| -> Option<u64> {
        let v = &stream[key];
        v.as_u64().or_else(|| v.as_str()?.parse().ok())
    };
    let (Some(width), Some(height)) = (int("width"), int("height")) else {
        return Err(failed(name, &[], "the file has no video stream"));
    };
    let rate = |key: &str| -> Option<f64> {
        let (n, d) = stream[key].as_str()?.split_once('/')?;
        let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
        (n > 0.0 && d > 0.0).then_some(n / d)
    };
    Ok(Probe {
        width: width as u32,
        height: height as u32,
        fps: rate("avg_frame_rate").or_else(|| rate("r_frame_rate")),
        frames: int("nb_read_packets").or_else(|| int("nb_frames")).map(|n| n as usize),
    })
}

/// Decodes the frames at `keep` (ascending indices), stopping ffmpeg once the last is read.
pub(super) fn decode(
    tools: Tools,
    path: &Path,
    name: &str,
    probe: &Probe,
    keep: &[usize],
) -> Result<Vec<RgbImage>, ImageError> {
    let mut cmd = Command::new(tools.ffmpeg);
    cmd.args(["-v", "error", "-nostdin", "-noautorotate", "-i"])
        .arg(path)
        // One output frame per decoded frame: no duplicates or drops to reach a constant rate.
        .args(["-map", "0:v:0", "-vsync", "passthrough"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(e, name))?;
    // Drain stderr on the side so that a chatty ffmpeg cannot block on a full pipe.
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let (w, h) = (probe.width, probe.height);
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    let mut frames = Vec::with_capacity(keep.len());
    let mut index = 0;
    while frames.len() < keep.len() {
        match stdout.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(failed(name, &[], &format!("reading ffmpeg's output: {e}"))),
        }
        if keep[frames.len()] == index {
            frames.push(RgbImage::from_raw(w, h, buf.clone()).expect("buffer is one frame"));
        }
        index += 1;
    }
    let done_early = frames.len() == keep.len();
    drop(stdout);
    if done_early {
        // The frames needed are in; the rest of the file need not be decoded.
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| failed(name, &[], &e.to_string()))?;
    let stderr = errors.join().unwrap_or_default();
    if !done_early {
        if !status.success() {
            return Err(failed(name, &stderr, "ffmpeg failed"));
        }
        return Err(failed(
            name,
            &[],
            &format!("ffprobe counted {} frames but ffmpeg decoded {index}", probe.frames.unwrap_or(0)),
        ));
    }
    Ok(frames)
}

fn spawn_error(e: std::io::Error, name: &str) -> ImageError {
    match e.kind() {
        ErrorKind::NotFound => ImageError::FfmpegMissing { path: name.into() },
        _ => failed(name, &[], &format!("cannot run ffmpeg: {e}")),
    }
}

/// An ffmpeg error: its last message line, or `fallback` when it printed none.
fn failed(name: &str, stderr: &[u8], fallback: &str) -> ImageError {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().find(|l| !l.trim().is_empty());
    ImageError::Ffmpeg { path: name.into(), detail: line.map_or(fallback.to_string(), |l| l.trim().to_string()) }
}
