//! Fine-tuning on the user's own conversations (`[conversations]`): multi-turn conversations
//! are tokenised as inference meets them, every answer scored; a run learns from them; what
//! cannot work is refused by name before anything is written.
use super::super::*;
use super::scratch;
use crate::models::Media;
use crate::prompt::{Message, Part};
use std::path::{Path, PathBuf};

const LLAVA: &str = "tests/fixtures/llava/one_image/model";
const QWEN: &str = "tests/fixtures/qwen2_vl/two_images/model";
const COLOURS: [(&str, [u8; 3]); 4] =
    [("red", [220, 30, 30]), ("green", [30, 200, 40]), ("blue", [30, 40, 220]), ("yellow", [230, 220, 30])];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `dir/train.json` and `dir/eval.json`: each image a square of one colour on grey, each
/// conversation asking its colour (and, every other one, a second turn asking its shape).
fn write_data(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let entries = |from: usize, n: usize| {
        let list: Vec<String> = (from..from + n)
            .map(|i| {
                let (name, rgb) = COLOURS[i % 4];
                let mut image = ::image::RgbImage::from_pixel(40 + i as u32 % 3 * 8, 40, ::image::Rgb([128; 3]));
                for y in 8..32 {
                    for x in 8 + i as u32 % 5..30 {
                        image.put_pixel(x, y, ::image::Rgb(rgb));
                    }
                }
                image.save(dir.join(format!("{i}.png"))).unwrap();
                let more = if i % 2 == 0 {
                    r#", {"from": "human", "value": "And its shape?"}, {"from": "gpt", "value": "A square."}"#
                } else {
                    ""
                };
                format!(
                    r#"{{"id": "{i}", "image": "{i}.png", "conversations": [{{"from": "human", "value": "<image>\nWhat colour is the square?"}}, {{"from": "gpt", "value": "It is {name}."}}{more}]}}"#
                )
            })
            .collect();
        format!("[{}]", list.join(",\n"))
    };
    std::fs::write(dir.join("train.json"), entries(0, 24)).unwrap();
    std::fs::write(dir.join("eval.json"), entries(100, 8)).unwrap();
}

fn config(base: &str, data: &Path, out: &Path, steps: usize) -> TrainConfig {
    let mut c = TrainConfig { out: out.to_path_buf(), base: Some(root().join(base)), seed: 3, ..Default::default() };
    c.conversations.train = Some(data.join("train.json"));
    c.conversations.eval = Some(data.join("eval.json"));
    c.optim.steps = steps;
    c.optim.batch_size = 4;
    c.optim.lr = 3e-3;
    c.optim.warmup_steps = 2;
    c.optim.eval_every = 0;
    c.optim.checkpoint_every = 0;
    c.optim.eval_examples = 8;
    c
}

/// Two turns about two images, one shown in each turn.
fn two_turns() -> (Vec<Message>, Media) {
    let messages = vec![
        Message::new("user", vec![Part::Image, Part::Text { text: "What is this?".into() }]),
        Message::assistant("A red square."),
        Message::new("user", vec![Part::Text { text: "And this?".into() }, Part::Image]),
        Message::assistant("A blue one."),
    ];
    let image = |rgb| ::image::RgbImage::from_pixel(56, 56, ::image::Rgb(rgb));
    (messages, Media::images(vec![image([200, 0, 0]), image([0, 0, 200])]))
}

/// Qwen2-VL: the turn-by-turn ids are those of the whole rendered conversation, each answer is
/// scored through its `<|im_end|>`, and `max_tokens` drops whole turns.
#[test]
fn a_multi_turn_conversation_is_tokenised_as_one_and_every_answer_scored() {
    let (data, out) = (scratch("conv-qwen-data"), scratch("conv-qwen"));
    write_data(&data);
    let trainer = Trainer::new(config(QWEN, &data, &out, 1), false).unwrap();
    let (model, chat) = (trainer.model.as_ref(), &trainer.chat);
    let (messages, media) = two_turns();
    let s = conversation_sample(model, chat, &messages, &media, usize::MAX).unwrap();

    let whole_text = chat.render(&messages, false).unwrap();
    let whole = model.prepare(&whole_text, &media, model.tokenizer().adds_special_tokens_to(&whole_text)).unwrap();
    let im_end = model.tokenizer().token_id("<|im_end|>").unwrap();
    let last_end = whole.ids.iter().rposition(|&t| t == im_end).unwrap();
    assert_eq!(s.prepared.ids, whole.ids[..=last_end], "turn by turn differs from the whole conversation");
    assert_eq!(s.prepared.media.len(), 2);
    assert_eq!(s.positions, model.positions(&whole).unwrap()[..=last_end]);
    let answers: Vec<String> =
        s.answers.iter().map(|a| model.tokenizer().decode(&s.targets[a.clone()], false).unwrap()).collect();
    assert_eq!(answers, ["A red square.<|im_end|>", "A blue one.<|im_end|>"]);
    for (row, target) in s.rows.iter().zip(&s.targets) {
        assert_eq!(s.prepared.ids[*row as usize + 1], *target);
    }

    // A limit inside the second answer keeps the first turn only; one inside the first fails.
    let first_end = s.rows[s.answers[0].end - 1] as usize + 2;
    let cut = conversation_sample(model, chat, &messages, &media, first_end + 3).unwrap();
    assert_eq!((cut.answers.len(), cut.prepared.ids.len(), cut.prepared.media.len()), (1, first_end, 1));
    let err = conversation_sample(model, chat, &messages, &media, first_end - 1).err().unwrap().to_string();
    assert!(
        err.contains(&format!("its first answer ends at token {first_end}, past the limit of {}", first_end - 1)),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&data);
}

/// Qwen2-VL learns from videos too: a folder of frames (at most `video_frames` kept) becomes
/// the video tokens the whole conversation would have, and a step trains on it.
#[test]
fn a_video_conversation_trains_with_qwen2_vl() {
    let (data, out) = (scratch("conv-video-data"), scratch("conv-video"));
    write_data(&data);
    std::fs::create_dir_all(data.join("clip")).unwrap();
    for i in 0..6u32 {
        let mut frame = ::image::RgbImage::from_pixel(56, 56, ::image::Rgb([128; 3]));
        for y in 40 - i * 6..50 - i * 6 {
            for x in 20..30 {
                frame.put_pixel(x, y, ::image::Rgb([220, 30, 30]));
            }
        }
        frame.save(data.join("clip").join(format!("{i:02}.png"))).unwrap();
    }
    std::fs::write(
        data.join("video.json"),
        r#"[{"video": "clip", "conversations": [{"from": "human", "value": "<video>\nWhich way does it move?"}, {"from": "gpt", "value": "Up."}]}]"#,
    )
    .unwrap();
    let mut c = config(QWEN, &data, &out, 1);
    c.conversations.train = Some(data.join("video.json"));
    c.conversations.video_frames = 4;
    c.optim.batch_size = 1;
    let mut trainer = Trainer::new(c, false).unwrap();
    let data_set = trainer.dataset.as_ref().unwrap();
    let entry = &data_set.train.entries[0];
    let media = data_set.media(entry).unwrap();
    assert_eq!(media.videos[0].frames.len(), 4);
    let (model, chat) = (trainer.model.as_ref(), &trainer.chat);
    let s = conversation_sample(model, chat, &entry.messages, &media, usize::MAX).unwrap();
    let text = chat.render(&entry.messages, false).unwrap();
    let whole = model.prepare(&text, &media, model.tokenizer().adds_special_tokens_to(&text)).unwrap();
    assert_eq!(s.prepared.ids, whole.ids[..s.prepared.ids.len()]);
    assert_eq!(s.positions, model.positions(&whole).unwrap()[..s.positions.len()]);
    let video_tokens = s.prepared.ids.iter().filter(|&&t| t == 413).count();
    assert!(video_tokens > 0, "no video tokens");
    assert_eq!(model.tokenizer().decode(&s.targets, false).unwrap(), "Up.<|im_end|>");
    let mut losses = vec![];
    trainer.run(&mut |p| losses.push(p.loss)).unwrap();
    assert!(losses.len() == 1 && losses[0].is_finite(), "{losses:?}");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&data);
}

/// LLaVA-1.5's template ends a turn with no token: each answer is followed by the EOS, in the
/// ids and as its last target, as LLaVA's own training wrote it.
#[test]
fn a_template_without_turn_end_tokens_ends_each_answer_with_eos() {
    let (data, out) = (scratch("conv-llava-data"), scratch("conv-llava"));
    write_data(&data);
    let trainer = Trainer::new(config(LLAVA, &data, &out, 1), false).unwrap();
    let (model, chat) = (trainer.model.as_ref(), &trainer.chat);
    let (mut messages, mut media) = two_turns();
    // LLaVA-1.5 shows one image.
    messages[2] = Message::new("user", vec![Part::Text { text: "And its size?".into() }]);
    media.images.pop();
    let s = conversation_sample(model, chat, &messages, &media, usize::MAX).unwrap();
    let tokenizer = model.tokenizer();
    for (answer, expected) in s.answers.iter().zip(["A red square.", "A blue one."]) {
        let targets = &s.targets[answer.clone()];
        assert_eq!(targets.last(), Some(&2), "an answer does not end with the EOS");
        assert_eq!(tokenizer.decode(&targets[..targets.len() - 1], false).unwrap().trim(), expected);
        assert_eq!(s.prepared.ids[s.rows[answer.end - 1] as usize + 1], 2);
    }
    let text = tokenizer.decode(&s.prepared.ids, false).unwrap();
    assert!(text.contains("ASSISTANT: A red square.</s> USER: And its size? ASSISTANT: A blue one.</s>"), "{text}");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&data);
}

/// A SentencePiece tokenizer (Llama's, LLaVA-1.5's) marks a word's leading space on the word:
/// tokenised alone, an answer " A red square." would begin with a lone "▁" that inference
/// never produces. The conversation is tokenised whole, so answers are "▁A ▁red ▁square.".
#[test]
fn answers_under_a_sentencepiece_tokenizer_have_no_stray_space_tokens() {
    let (data, out, base) = (scratch("conv-sp-data"), scratch("conv-sp"), scratch("conv-sp-base"));
    write_data(&data);
    std::fs::create_dir_all(&base).unwrap();
    for entry in std::fs::read_dir(root().join(LLAVA)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, base.join(path.file_name().unwrap())).unwrap();
    }
    let special = ["<unk>", "<s>", "</s>", "<pad>", "<image>"];
    let words = [
        "▁",
        "▁USER:",
        "▁ASSISTANT:",
        "▁What",
        "▁is",
        "▁this?",
        "▁A",
        "▁red",
        "▁square.",
        "▁And",
        "▁its",
        "▁size?",
        "▁blue",
        "▁one.",
        "\n",
        "▁\n",
        "USER:",
    ];
    let vocab: serde_json::Map<String, serde_json::Value> =
        special.iter().chain(&words).enumerate().map(|(i, w)| (w.to_string(), serde_json::json!(i))).collect();
    let added: Vec<serde_json::Value> = special
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    // Llama-2's "legacy" normaliser: a "▁" before each text piece, every space a "▁".
    let normalizer = serde_json::json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]});
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": normalizer,
        "pre_tokenizer": {"type": "Split", "pattern": {"String": "▁"}, "behavior": "MergedWithNext", "invert": false},
        "decoder": {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(base.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let mut c = config(LLAVA, &data, &out, 1);
    c.base = Some(base.clone());
    let trainer = Trainer::new(c, false).unwrap();
    let (model, chat) = (trainer.model.as_ref(), &trainer.chat);
    let (mut messages, mut media) = two_turns();
    messages[2] = Message::new("user", vec![Part::Text { text: "And its size?".into() }]);
    media.images.pop();
    let s = conversation_sample(model, chat, &messages, &media, usize::MAX).unwrap();
    let id = |w: &str| special.iter().chain(&words).position(|t| *t == w).unwrap() as u32;
    let answers: Vec<&[u32]> = s.answers.iter().map(|a| &s.targets[a.clone()]).collect();
    assert_eq!(answers[0], [id("▁A"), id("▁red"), id("▁square."), 2]);
    assert_eq!(answers[1], [id("▁A"), id("▁blue"), id("▁one."), 2]);
    // Alone, the answer would start with a lone space token.
    assert_eq!(model.tokenizer().encode(" A red square.", false).unwrap()[0], id("▁"));
    let tail = &s.prepared.ids[s.prepared.ids.len() - 12..];
    // (The lone "▁" after "</s>" is the legacy normaliser's, as inference tokenises it too.)
    let expected =
        ["▁square.", "</s>", "▁", "▁USER:", "▁And", "▁its", "▁size?", "▁ASSISTANT:", "▁A", "▁blue", "▁one.", "</s>"];
    assert_eq!(tail, expected.map(id), "{:?}", model.tokenizer().decode(tail, false));
    for dir in [&out, &data, &base] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A LLaVA base learns the colours from the conversations: the held-out loss falls, a run
/// interrupted and resumed ends as one run straight through, and the folder computes what
/// training computed.
#[test]
fn a_base_fine_tunes_on_conversations() {
    let (data, out, resumed) = (scratch("conv-ft-data"), scratch("conv-ft"), scratch("conv-ft-resumed"));
    write_data(&data);
    let mut c = config(LLAVA, &data, &out, 16);
    c.optim.checkpoint_every = 8;
    let mut trainer = Trainer::new(c.clone(), false).unwrap();
    let before = trainer.eval_loss().unwrap();
    trainer
        .run(&mut |p| {
            if p.step == 8 {
                super::copy_run(&out, &resumed);
            }
        })
        .unwrap();
    let after = trainer.eval_loss().unwrap();
    assert!(after < before * 0.7, "held-out loss {before} -> {after}");

    c.out = resumed.clone();
    let mut again = Trainer::new(c, true).unwrap();
    assert_eq!(again.step(), 8);
    again.run(&mut |_| {}).unwrap();
    let weights = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(weights(&out) == weights(&resumed), "the resumed run's weights differ");

    let pipeline = crate::pipeline::Pipeline::load(&out, &Default::default()).unwrap();
    let data_set = trainer.dataset.as_ref().unwrap();
    let entry = &data_set.eval.as_ref().unwrap().entries[0];
    let media = data_set.media(entry).unwrap();
    let s = conversation_sample(trainer.model.as_ref(), &trainer.chat, &entry.messages, &media, usize::MAX).unwrap();
    super::computes_as_trained_on(&trainer, &pipeline, &s);
    for dir in [&out, &data, &resumed] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// An entry that passes the up-front check but cannot be used when drawn (its image's data
/// is cut short after a good header) is left out of its step and named; a step that keeps no
/// entry stops the run with the reason.
#[test]
fn an_entry_that_fails_when_drawn_is_skipped_and_named() {
    let (data, out) = (scratch("conv-skip-data"), scratch("conv-skip"));
    write_data(&data);
    let bytes = std::fs::read(data.join("1.png")).unwrap();
    std::fs::write(data.join("cut.png"), &bytes[..bytes.len() / 2]).unwrap();
    let text = std::fs::read_to_string(data.join("train.json")).unwrap();
    let entries: Vec<&str> = text.trim_matches(['[', ']']).split(",\n").collect();
    std::fs::write(
        data.join("three.json"),
        format!("[{},\n{}]", entries[..2].join(",\n"), entries[3].replace("3.png", "cut.png")),
    )
    .unwrap();
    let mut c = config(LLAVA, &data, &out, 2);
    c.conversations.train = Some(data.join("three.json"));
    c.optim.batch_size = 3;
    let mut trainer = Trainer::new(c.clone(), false).unwrap();
    let mut skipped = vec![];
    trainer.run(&mut |p| skipped.extend(p.skipped.clone())).unwrap();
    let expected = format!("{}: entry 3 (id \"3\"): ", data.join("three.json").display());
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped.iter().all(|s| s.starts_with(&expected) && s.contains("cut.png")), "{skipped:?}");

    std::fs::write(data.join("cut.json"), format!("[{}]", entries[3].replace("3.png", "cut.png"))).unwrap();
    c.conversations.train = Some(data.join("cut.json"));
    let _ = std::fs::remove_dir_all(&out);
    let err = Trainer::new(c, false).unwrap().run(&mut |_| {}).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "no entry of the batch could be used; the first: {}",
            data.join("cut.json").display()
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&data);
}

/// What a run on conversations cannot do is refused before anything is written.
#[test]
fn conversations_that_cannot_train_are_refused_by_name() {
    let (data, out) = (scratch("conv-refused-data"), scratch("conv-refused"));
    write_data(&data);
    let mut no_base = config(LLAVA, &data, &out, 1);
    no_base.base = None;
    let mut heads = config(QWEN, &data, &out, 1);
    heads.optim.pointer_layer = 1;
    let mut no_train = config(LLAVA, &data, &out, 1);
    no_train.conversations.train = None;
    let video = data.join("video.json");
    std::fs::create_dir_all(data.join("clip")).unwrap();
    std::fs::write(
        &video,
        r#"[{"id": "v", "video": "clip", "conversations": [{"from": "human", "value": "<video>Where?"}, {"from": "gpt", "value": "Up."}]}]"#,
    )
    .unwrap();
    let mut llava_video = config(LLAVA, &data, &out, 1);
    llava_video.conversations.train = Some(video.clone());
    let bad = data.join("bad.json");
    std::fs::write(&bad, r#"[{"id": "b", "image": "missing.png", "conversations": []}]"#).unwrap();
    let mut bad_entry = config(LLAVA, &data, &out, 1);
    bad_entry.conversations.eval = Some(bad.clone());
    for (config, expected) in [
        (no_base, "conversations.train (".to_string()),
        (heads, "optim.pointer_layer learns from the scenes' labels".into()),
        (no_train, "conversations.eval (".into()),
        (
            llava_video,
            format!("{}: entry 1 (id \"v\"): has a video, which a llava model does not take", video.display()),
        ),
        (bad_entry, format!("{}: entry 1 (id \"b\"): image: ", bad.display())),
    ] {
        let refused = config.validate().err().or_else(|| Trainer::new(config, false).err().map(|e| e.to_string()));
        let message = refused.expect("must be refused");
        assert!(message.contains(&expected), "expected {expected:?} in {message:?}");
        assert!(!out.exists(), "a refused run wrote its folder: {message}");
    }
    let _ = std::fs::remove_dir_all(&data);
}
