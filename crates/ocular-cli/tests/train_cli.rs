//! `ocular train` end to end on a tiny config: a dense warm-up and question steps shared
//! between threads, a model folder the other commands load, the same weights on one thread
//! or two, and a clear error for a config that does not parse.

mod common;

use common::{expect_error, ocular, scratch, stderr};

/// A tiny model: two dense warm-up steps, then two question steps.
fn tiny_config(dir: &std::path::Path, out: &str) -> std::path::PathBuf {
    let config = format!(
        r#"out = "{}"
seed = 5

[model]
vocab_size = 400
vision_depth = 1
vision_width = 32
vision_heads = 2
text_layers = 1
text_hidden = 64
text_heads = 4
text_kv_heads = 2
text_intermediate = 128
min_pixels = 784
max_pixels = 3136

[data]
max_side = 160

[optim]
steps = 2
batch_size = 3
lr = 3e-3
warmup_steps = 1
eval_every = 0
checkpoint_every = 0

[dense]
warmup_steps = 2
warmup_batch_size = 3
"#,
        dir.join(out).display()
    );
    let path = dir.join(format!("{out}.toml"));
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn trains_on_threads_and_writes_a_model_the_same_whatever_the_threads() {
    let dir = scratch("train-cli");
    let mut weights = vec![];
    for (out, threads) in [("one", "1"), ("two", "2")] {
        let config = tiny_config(&dir, out);
        let o = ocular(&["train", "--config", config.to_str().unwrap(), "--threads", threads]);
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        let plural = if threads == "1" { "thread" } else { "threads" };
        assert!(err.contains(&format!("from step 0 on {threads} {plural}")), "{err}");
        assert!(err.contains("step 4/4"), "{err}");
        let folder = dir.join(out);
        let info = ocular(&["info", "--model", folder.to_str().unwrap()]);
        assert!(info.status.success(), "{}", stderr(&info));
        weights.push(std::fs::read(folder.join("model.safetensors")).unwrap());
    }
    assert!(weights[0] == weights[1], "two threads trained other weights than one");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_config_or_thread_count_is_named() {
    let dir = scratch("train-cli-bad");
    let config = dir.join("bad.toml");
    std::fs::write(&config, "[optim]\nsteps = \"many\"\n").unwrap();
    let o = ocular(&["train", "--config", config.to_str().unwrap()]);
    expect_error(&o, 1, &["bad.toml"]);
    let o = ocular(&["train", "--config", config.to_str().unwrap(), "--threads", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--threads"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
