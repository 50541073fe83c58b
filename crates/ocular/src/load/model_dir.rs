//! A model folder in the Hugging Face layout, in either the transformers 4.x form that most
//! Hub checkpoints use or the form transformers 5 writes. Each accessor names the file it read.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

pub struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::model_file(&root, "model folder not found (expected a folder with config.json)"));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A JSON file of the folder, or None when absent.
    pub fn json(&self, name: &str) -> Result<Option<Value>> {
        let path = self.path(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::model_file(&path, format!("not valid JSON: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::model_file(&path, e)),
        }
    }

    pub fn config(&self) -> Result<Value> {
        self.json("config.json")?
            .ok_or_else(|| Error::model_file(self.path("config.json"), "missing: every model folder needs config.json"))
    }

    /// The image processor's settings: `preprocessor_config.json` (4.x) or the
    /// `image_processor` entry of `processor_config.json` (5.x).
    pub fn image_processor_config(&self) -> Result<(PathBuf, Value)> {
        if let Some(v) = self.json("processor_config.json")? {
            if let Some(ip) = v.get("image_processor") {
                return Ok((self.path("processor_config.json"), ip.clone()));
            }
        }
        if let Some(v) = self.json("preprocessor_config.json")? {
            return Ok((self.path("preprocessor_config.json"), v));
        }
        Err(Error::model_file(
            &self.root,
            "no image processor settings: expected preprocessor_config.json or processor_config.json",
        ))
    }

    /// Processor-level fields (`patch_size`, `num_additional_image_tokens`, ...): the top level of
    /// `processor_config.json`, else `preprocessor_config.json` where 4.x checkpoints keep them.
    pub fn processor_field(&self, key: &str) -> Result<Option<Value>> {
        for name in ["processor_config.json", "preprocessor_config.json"] {
            if let Some(v) = self.json(name)?.and_then(|v| v.get(key).cloned()) {
                if !v.is_null() {
                    return Ok(Some(v));
                }
            }
        }
        Ok(None)
    }

    /// The chat template, looked for where transformers writes or reads it.
    pub fn chat_template(&self) -> Result<Option<String>> {
        if let Ok(t) = std::fs::read_to_string(self.path("chat_template.jinja")) {
            return Ok(Some(t));
        }
        for (file, key) in [
            ("chat_template.json", "chat_template"),
            ("processor_config.json", "chat_template"),
            ("tokenizer_config.json", "chat_template"),
        ] {
            if let Some(t) = self.json(file)?.and_then(|v| v.get(key).cloned()) {
                match t {
                    Value::String(s) => return Ok(Some(s)),
                    // A list of named templates: take "default".
                    Value::Array(items) => {
                        let default =
                            items.iter().find(|i| i["name"] == "default").and_then(|i| i["template"].as_str());
                        if let Some(s) = default {
                            return Ok(Some(s.to_string()));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(None)
    }

    /// The safetensors files holding the weights: `model.safetensors`, or the shards an
    /// index lists.
    pub fn weight_files(&self) -> Result<Vec<PathBuf>> {
        let single = self.path("model.safetensors");
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index_path = self.path("model.safetensors.index.json");
        let Some(index) = self.json("model.safetensors.index.json")? else {
            return Err(Error::model_file(
                &self.root,
                "no weights: expected model.safetensors or model.safetensors.index.json",
            ));
        };
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::model_file(&index_path, "no `weight_map` object"))?;
        let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
        files.sort();
        files.dedup();
        files
            .into_iter()
            .map(|f| {
                let p = self.path(&f);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(Error::model_file(&p, "missing: the shard is listed in model.safetensors.index.json"))
                }
            })
            .collect()
    }
}
