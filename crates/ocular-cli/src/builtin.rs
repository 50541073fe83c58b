//! The built-in model: Ocular's own small Qwen2-VL-architecture model, trained by
//! `ocular train --config configs/builtin.toml` and compiled into the binary, so that `ocular`
//! sees something on a machine with nothing downloaded. On first use its files are written to a
//! cache folder named by their hash, then it loads like any model folder.

use std::path::PathBuf;

use anyhow::{Context, Result};

macro_rules! builtin_files {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/builtin/", $name)) as &[u8])),*]
    };
}

const FILES: [(&str, &[u8]); 7] = builtin_files!(
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "model.safetensors",
);

/// The name the built-in model goes by (`ocular serve` lists it under this name).
pub const NAME: &str = "ocular-scenes";

/// FNV-1a over every file: a new model gets a new folder.
fn fingerprint() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, bytes) in FILES {
        for &b in name.as_bytes().iter().chain(bytes) {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("OCULAR_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("ocular")
}

/// The built-in model's folder, written on first use (atomically: a half-written folder is
/// never taken for a model).
pub fn dir() -> Result<PathBuf> {
    let root = cache_root();
    let dir = root.join(format!("builtin-{:016x}", fingerprint()));
    if dir.join("model.safetensors").is_file() {
        return Ok(dir);
    }
    let staging = root.join(format!(".builtin-{}-{:x}", std::process::id(), fingerprint()));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&staging)?;
        for (name, bytes) in FILES {
            std::fs::write(staging.join(name), bytes)?;
        }
        match std::fs::rename(&staging, &dir) {
            // Another process got there first: theirs is the same model.
            Err(_) if dir.join("model.safetensors").is_file() => {
                let _ = std::fs::remove_dir_all(&staging);
                Ok(())
            }
            other => other,
        }
    };
    write().with_context(|| {
        format!("cannot unpack the built-in model into {} (set OCULAR_CACHE_DIR to a writable folder)", root.display())
    })?;
    Ok(dir)
}
