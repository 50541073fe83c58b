//! The model folder a training run writes, in the layout transformers 5 writes for Qwen2-VL, so
//! that Ocular and transformers both load it: config.json, tokenizer files, chat template,
//! processor_config.json, generation_config.json (weights are added by the trainer).

use std::path::Path;

use serde_json::{json, Value};

use super::config::{ModelShape, TrainConfig};
use super::tokenizer::{self, SPECIAL_TOKENS};
use crate::error::{Error, Result};

fn write_json(dir: &Path, name: &str, value: &Value) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value).expect("JSON values serialise"))
        .map_err(|e| Error::model_file(&path, e))
}

/// Everything but the weights of a new model of `config.model`'s shape, in `dir`.
pub fn write_new(dir: &Path, config: &TrainConfig) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::model_file(dir, e))?;
    let m = &config.model;
    let tok = tokenizer::build(m.vocab_size, config.seed, &config.data, 4000, m.split_digits)?;
    let template = if m.text_before_media { tokenizer::CHAT_TEMPLATE_TEXT_FIRST } else { tokenizer::CHAT_TEMPLATE };
    tokenizer::save(&tok, template, dir)?;
    let id = |t: &str| tok.token_to_id(t).expect("special tokens are added");
    write_json(dir, "config.json", &model_config(m, &id))?;
    write_json(dir, "processor_config.json", &processor_config(m))?;
    let eos = [id("<|im_end|>"), id("<|endoftext|>")];
    let generation = json!({"bos_token_id": id("<|endoftext|>"), "eos_token_id": eos, "pad_token_id": id("<|endoftext|>"), "do_sample": false});
    write_json(dir, "generation_config.json", &generation)
}

/// Copies a base model's files except its weights, to fine-tune it into `dir`.
pub fn copy_base(base: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::model_file(dir, e))?;
    let entries = std::fs::read_dir(base).map_err(|e| Error::model_file(base, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::model_file(base, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") || name == "model.safetensors.index.json" || !entry.path().is_file() {
            continue;
        }
        std::fs::copy(entry.path(), dir.join(&name)).map_err(|e| Error::model_file(entry.path(), e))?;
    }
    Ok(())
}

/// A resumed run keeps the shape its folder was made with; a `[model]` that asks for another
/// (a changed rotary base, say) would otherwise be ignored without a word, so it is an error
/// that names the first field that differs.
pub fn check_resumed_shape(dir: &Path, m: &ModelShape) -> Result<()> {
    for (name, wanted) in [("config.json", model_config(m, &|_| 0)), ("processor_config.json", processor_config(m))] {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::model_file(&path, e))?;
        let found: Value = serde_json::from_str(&text).map_err(|e| Error::model_file(&path, e))?;
        if let Some((field, wanted, found)) = first_difference(&wanted, &found, String::new()) {
            return Err(Error::model_file(
                &path,
                format!(
                    "{field} is {found} but the training config's [model] asks for {wanted}; a resumed run \
                     keeps the shape it started with (restore the config, or train into a new `out`)"
                ),
            ));
        }
    }
    Ok(())
}

/// The first leaf of `wanted` that `found` lacks or holds otherwise (numbers compared as
/// numbers, so 20 and 20.0 agree; token ids, which the tokenizer decides, are skipped).
fn first_difference(wanted: &Value, found: &Value, at: String) -> Option<(String, Value, Value)> {
    match (wanted, found) {
        (Value::Object(w), _) => w.iter().find_map(|(key, value)| {
            let field = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
            if key.ends_with("token_id") {
                return None;
            }
            first_difference(value, found.get(key).unwrap_or(&Value::Null), field)
        }),
        (Value::Number(w), Value::Number(f)) if w.as_f64() == f.as_f64() => None,
        (Value::Array(w), Value::Array(f)) if w.len() == f.len() => {
            w.iter().zip(f).enumerate().find_map(|(i, (w, f))| first_difference(w, f, format!("{at}[{i}]")))
        }
        _ if wanted == found => None,
        _ => Some((at, wanted.clone(), found.clone())),
    }
}

fn model_config(m: &ModelShape, id: &dyn Fn(&str) -> u32) -> Value {
    let head_dim = m.text_hidden / m.text_heads;
    // M-RoPE sections over head_dim / 2 frequency pairs, unless the config sets them: a quarter
    // for time, the rest split between rows and columns (Qwen2-VL's proportions, 16/24/24 of 64).
    let half = head_dim / 2;
    let t = half / 4;
    let h = (half - t) / 2;
    let section = m.mrope_section.unwrap_or([t, h, half - t - h]);
    json!({
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        "image_token_id": id("<|image_pad|>"),
        "video_token_id": id("<|video_pad|>"),
        "vision_start_token_id": id("<|vision_start|>"),
        "vision_end_token_id": id("<|vision_end|>"),
        "tie_word_embeddings": true,
        "text_config": {
            "model_type": "qwen2_vl_text",
            "vocab_size": m.vocab_size,
            "hidden_size": m.text_hidden,
            "intermediate_size": m.text_intermediate,
            "num_hidden_layers": m.text_layers,
            "num_attention_heads": m.text_heads,
            "num_key_value_heads": m.text_kv_heads,
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_theta, "mrope_section": section},
            "tie_word_embeddings": true,
            "bos_token_id": id(SPECIAL_TOKENS[0]),
            "eos_token_id": id("<|im_end|>"),
        },
        "vision_config": {
            "model_type": "qwen2_vl_vision",
            "depth": m.vision_depth,
            "embed_dim": m.vision_width,
            "hidden_size": m.text_hidden,
            "hidden_act": "quick_gelu",
            "mlp_ratio": m.vision_mlp_ratio,
            "num_heads": m.vision_heads,
            "in_channels": 3,
            "patch_size": m.vision_patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
    })
}

fn processor_config(m: &ModelShape) -> Value {
    let common = json!({
        "do_resize": true, "resample": 3, "do_rescale": true, "rescale_factor": 1.0 / 255.0,
        "do_normalize": true, "do_convert_rgb": true,
        // Grey maps to equal values in every channel, which the patch embedding's initial
        // filters (zero-sum, see trainer::init_weights) do not see: only colour and edges do.
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "patch_size": m.vision_patch_size, "temporal_patch_size": 2, "merge_size": 2,
        "size": {"shortest_edge": m.min_pixels, "longest_edge": m.max_pixels},
    });
    let with = |kind: &str, name: &str| {
        let mut v = common.clone();
        v[kind] = json!(name);
        v
    };
    json!({
        "processor_class": "Qwen2VLProcessor",
        "image_processor": with("image_processor_type", "Qwen2VLImageProcessor"),
        "video_processor": with("video_processor_type", "Qwen2VLVideoProcessor"),
    })
}
