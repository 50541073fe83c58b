//! `ocular train` end to end on a tiny config: a dense warm-up and question steps shared
//! between threads, a model folder the other commands load, the same weights on one thread
//! or two, a LLaVA base fine-tuned into a folder `ocular run` answers with, and a clear error
//! for a config that does not parse or asks a LLaVA base for videos.

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

/// A short fine-tune of the tiny LLaVA fixture; `extra` is appended to the config.
fn llava_config(dir: &std::path::Path, out: &str, extra: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = format!(
        "out = \"{}\"\nbase = \"{}\"\nseed = 2\n\n[optim]\nsteps = 2\nbatch_size = 2\neval_every = 0\ncheckpoint_every = 0\n{extra}",
        dir.join(out).display(),
        root.join("tests/fixtures/llava/one_image/model").display()
    );
    let path = dir.join(format!("{out}.toml"));
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn fine_tunes_a_llava_base_into_a_folder_that_answers() {
    let dir = scratch("train-cli-llava");
    let config = llava_config(&dir, "llava", "");
    let o = ocular(&["train", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("step 2/2"), "{}", stderr(&o));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let image = root.join("examples/scene.png");
    let folder = dir.join("llava");
    let args = ["run", "--model", folder.to_str().unwrap(), "--image", image.to_str().unwrap()];
    let o = ocular(&[&args[..], &["--greedy", "--max-new-tokens", "4", "What colour is the square?"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!o.stdout.is_empty(), "no answer");

    let config = llava_config(&dir, "llava-video", "\n[data]\ntasks = [\"count\", \"video\"]\n");
    let o = ocular(&["train", "--config", config.to_str().unwrap()]);
    expect_error(&o, 1, &["data.tasks: a llava model cannot learn the video task"]);
    assert!(!dir.join("llava-video").exists(), "a refused run wrote its folder");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[conversations]`: a LLaVA base fine-tunes on a JSON Lines file of the user's own
/// conversations (media from a folder of their own), reports its held-out loss, and answers;
/// a bad entry stops the run before it starts, naming the file, the entry and the field.
#[test]
fn fine_tunes_a_base_on_the_users_conversations() {
    let dir = scratch("train-cli-conversations");
    std::fs::create_dir_all(&dir).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let turn = |q: &str, a: &str| format!(r#"{{"from": "human", "value": "{q}"}}, {{"from": "gpt", "value": "{a}"}}"#);
    let lines = [
        format!(
            r#"{{"id": "a", "image": "scene.png", "conversations": [{}]}}"#,
            turn("<image>\\nHow many objects?", "4")
        ),
        format!(
            r#"{{"id": "b", "image": ["two_a.png"], "conversations": [{}, {}]}}"#,
            turn("Describe <image>", "Shapes."),
            turn("Anything else?", "No.")
        ),
    ];
    std::fs::write(dir.join("train.jsonl"), lines.join("\n")).unwrap();
    std::fs::write(dir.join("eval.json"), format!("[{}]", lines[0])).unwrap();
    let section = |train: &str| {
        format!(
            "\n[conversations]\ntrain = \"{}\"\neval = \"{}\"\nmedia_folder = \"{}\"\n",
            dir.join(train).display(),
            dir.join("eval.json").display(),
            root.join("examples").display()
        )
    };
    let config = llava_config(&dir, "mine", &section("train.jsonl"));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("eval_every = 0", "eval_every = 1")).unwrap();
    let o = ocular(&["train", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("held-out"), "{}", stderr(&o));
    let folder = dir.join("mine");
    let image = root.join("examples/scene.png");
    let args = ["run", "--model", folder.to_str().unwrap(), "--image", image.to_str().unwrap(), "--greedy"];
    let o = ocular(&[&args[..], &["--max-new-tokens", "4", "How many objects?"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));

    // `ocular eval --suite conversations` asks every answer turn of the file.
    let predictions = dir.join("predictions.jsonl");
    let (data, media) = (dir.join("train.jsonl"), root.join("examples"));
    let eval = ["eval", "--model", folder.to_str().unwrap(), "--suite", "conversations", "--json", "-q"];
    let files = ["--data", data.to_str().unwrap(), "--media-folder", media.to_str().unwrap()];
    let o = ocular(&[&eval[..], &files, &["--predictions", predictions.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let answered: Vec<serde_json::Value> =
        std::fs::read_to_string(&predictions).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(report["conversations"]["n"], 3, "{report}");
    let right = answered.iter().filter(|l| l["correct"] == true).count() as f64;
    assert_eq!(report["conversations"]["accuracy"].as_f64().unwrap(), right / 3.0);
    let asked: Vec<(&str, i64, &str, &str)> = answered
        .iter()
        .map(|l| {
            (
                l["entry"].as_str().unwrap(),
                l["turn"].as_i64().unwrap(),
                l["question"].as_str().unwrap(),
                l["expected"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        asked,
        [
            ("line 1 (id \"a\")", 1, "How many objects?", "4"),
            ("line 2 (id \"b\")", 1, "Describe", "Shapes."),
            ("line 2 (id \"b\")", 2, "Anything else?", "No.")
        ]
    );
    let o = ocular(&[&eval[..3], &["--suite", "conversations"]].concat());
    expect_error(&o, 1, &["--suite conversations needs --data FILE"]);
    // The file's images are held to --max-image-pixels, like any other command's.
    let o = ocular(&[&eval[..], &files, &["--max-image-pixels", "100"]].concat());
    expect_error(&o, 1, &[&format!("{}: line 1 (id \"a\"): image: ", data.display()), "over the limit of 100"]);

    std::fs::write(
        dir.join("bad.jsonl"),
        format!("{}\n{{\"id\": \"c\", \"image\": \"nowhere.png\", \"conversations\": []}}", lines[0]),
    )
    .unwrap();
    let config = llava_config(&dir, "bad", &section("bad.jsonl"));
    let o = ocular(&["train", "--config", config.to_str().unwrap()]);
    let bad = dir.join("bad.jsonl");
    expect_error(&o, 1, &[&format!("{}: line 2 (id \"c\"): image: ", bad.display()), "nowhere.png"]);
    assert!(!dir.join("bad").exists(), "a refused run wrote its folder");
    let _ = std::fs::remove_dir_all(&dir);
}
