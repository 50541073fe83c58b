use super::*;

/// A fresh folder holding a small PNG `a.png`, a second one `b.png`, and `text` as `data.json`.
fn folder(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ocular-conversations-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for file in ["a.png", "b.png"] {
        ::image::RgbImage::from_pixel(8, 6, ::image::Rgb([200, 10, 10])).save(dir.join("images").join(file)).unwrap();
    }
    std::fs::write(dir.join("data.json"), text).unwrap();
    dir
}

fn text(s: &str) -> Part {
    Part::Text { text: s.into() }
}

#[test]
fn llava_entries_become_messages_with_their_media_in_place() {
    let dir = folder(
        "ok",
        r#"[
          {"id": "one", "image": "images/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "And its size?"}, {"from": "gpt", "value": "Small."}]},
          {"id": 2, "image": ["images/a.png", "images/b.png"], "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Compare <image> with <image>."}, {"role": "assistant", "content": "Same."}]},
          {"image": "images/b.png", "conversations": [
            {"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "A red square."}]},
          {"video": "images", "conversations": [
            {"from": "human", "value": "<image>\nWhere does it go?"}, {"from": "gpt", "value": "Up."}]}
        ]"#,
    );
    let c = Conversations::open(&dir.join("data.json"), None, &ImageLimits::default()).unwrap();
    assert_eq!(c.entries.len(), 4);
    let [one, two, three, four] = &c.entries[..] else { unreachable!() };
    assert_eq!(one.name, "entry 1 (id \"one\")");
    assert_eq!(one.images, vec![dir.join("images/a.png")]);
    assert_eq!(
        one.messages,
        vec![
            Message::new("user", vec![Part::Image, text("What colour is it?")]),
            Message::assistant("Red."),
            Message::new("user", vec![text("And its size?")]),
            Message::assistant("Small."),
        ]
    );
    assert_eq!(two.name, "entry 2 (id 2)");
    assert_eq!(two.messages[0], Message::system("Be brief."));
    assert_eq!(two.messages[1].content, vec![text("Compare "), Part::Image, text(" with "), Part::Image, text(".")]);
    // Without tags, the media open the first human turn.
    assert_eq!(three.name, "entry 3");
    assert_eq!(three.messages[0].content, vec![Part::Image, text("Describe it.")]);
    // LLaVA-Video's entries mark a video with <image>.
    assert_eq!((four.videos.len(), &four.messages[0].content), (1, &vec![Part::Video, text("Where does it go?")]));

    // JSON Lines name entries by line, and a media folder replaces the file's own.
    std::fs::write(
        dir.join("data.jsonl"),
        "{\"image\": \"a.png\", \"conversations\": [{\"from\": \"human\", \"value\": \"Hi\"}, {\"from\": \"gpt\", \"value\": \"Yes\"}]}\n\n[1]\n",
    )
    .unwrap();
    let err = Conversations::open(&dir.join("data.jsonl"), Some(&dir.join("images")), &ImageLimits::default())
        .unwrap_err()
        .to_string();
    assert_eq!(err, format!("{}: line 3: expected a JSON object, found a list", dir.join("data.jsonl").display()));
    std::fs::write(dir.join("data.jsonl"), "{\"image\": \"a.png\", \"conversations\": [{\"from\": \"human\", \"value\": \"Hi\"}, {\"from\": \"gpt\", \"value\": \"Yes\"}]}\n").unwrap();
    let c = Conversations::open(&dir.join("data.jsonl"), Some(&dir.join("images")), &ImageLimits::default()).unwrap();
    assert_eq!((c.entries[0].name.as_str(), &c.entries[0].images), ("line 1", &vec![dir.join("images/a.png")]));
    // An image over the run's pixel limit (8 x 6 here) is refused when the file opens.
    let tight = ImageLimits { max_pixels: 40 };
    let err = Conversations::open(&dir.join("data.jsonl"), Some(&dir.join("images")), &tight).unwrap_err().to_string();
    assert!(err.contains("line 1: image: ") && err.contains("= 48 pixels, over the limit of 40"), "{err}");
    assert!(err.contains("max_image_pixels in a training config's [conversations]"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_entry_is_named_with_its_field() {
    let ok_turns = r#"[{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]"#;
    let cases: Vec<(String, &str)> = vec![
        ("[]".into(), "no entries"),
        ("[{\"id\": 1,".into(), "not a JSON array of entries"),
        ("{\"x\": 1}\nnot json".into(), "line 2: not a JSON entry"),
        ("[1]".into(), "entry 1: expected a JSON object, found a number"),
        ("[{\"image\": \"images/a.png\"}]".into(), "entry 1: no \"conversations\" (or \"messages\") list"),
        ("[{\"conversations\": []}]".into(), "entry 1: \"conversations\" must be a non-empty list of turns, found a list"),
        (format!("[{{\"image\": 3, \"conversations\": {ok_turns}}}]"), "entry 1: \"image\" must be a path or a list of paths, found a number"),
        (format!("[{{\"image\": \"images/c.png\", \"conversations\": {ok_turns}}}]"), "entry 1: image: "),
        (format!("[{{\"image\": \"data.json\", \"conversations\": {ok_turns}}}]"), "entry 1: image: "),
        (format!("[{{\"video\": \"clips/x\", \"conversations\": {ok_turns}}}]"), "entry 1: video "),
        ("[{\"id\": \"q\", \"conversations\": [{\"from\": \"bot\", \"value\": \"Q\"}]}]".into(), "entry 1 (id \"q\"): conversations[0]: \"from\" must be human, gpt or system"),
        ("[{\"conversations\": [{\"from\": \"human\", \"value\": 5}]}]".into(), "entry 1: conversations[0]: \"value\" must be a string"),
        ("[{\"conversations\": [{\"text\": \"Q\"}]}]".into(), "entry 1: conversations[0]: expected {\"from\", \"value\"} or {\"role\", \"content\"}"),
        ("[{\"conversations\": [{\"from\": \"gpt\", \"value\": \"A\"}]}]".into(), "conversations[0]: an assistant turn where a user turn was expected"),
        ("[{\"conversations\": [{\"from\": \"human\", \"value\": \"Q\"}, {\"from\": \"human\", \"value\": \"Q\"}]}]".into(), "conversations[1]: a user turn where an assistant turn was expected"),
        ("[{\"conversations\": [{\"from\": \"human\", \"value\": \"Q\"}, {\"from\": \"system\", \"value\": \"S\"}]}]".into(), "conversations[1]: a system turn may only come first"),
        ("[{\"conversations\": [{\"from\": \"human\", \"value\": \"Q\"}]}]".into(), "entry 1: the last turn has no answer after it"),
        ("[{\"conversations\": [{\"from\": \"human\", \"value\": \"Q\"}, {\"from\": \"gpt\", \"value\": \"<image>\"}]}]".into(), "entry 1: conversations[1]: a <image> tag in a gpt turn (media go in human turns)"),
        ("\u{feff}{\"conversations\": [{\"from\": \"human\", \"value\": \"Q\"}]}".into(), "line 1: the last turn has no answer after it"),
        ("[{\"image\": \"images/a.png\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image><image>Q\"}, {\"from\": \"gpt\", \"value\": \"A\"}]}]".into(), "entry 1: 2 <image> tag(s) in its turns but 1 image given"),
    ];
    for (i, (content, expected)) in cases.iter().enumerate() {
        let dir = folder(&format!("bad{i}"), content);
        let path = dir.join("data.json");
        let err = Conversations::open(&path, None, &ImageLimits::default()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: ", path.display())), "case {i}: {err}");
        assert!(err.contains(expected), "case {i}: expected {expected:?} in {err:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn each_epoch_draws_every_entry_once_in_its_own_order() {
    let turns = r#"[{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]"#;
    let entries: Vec<String> = (0..10).map(|i| format!("{{\"id\": {i}, \"conversations\": {turns}}}")).collect();
    let dir = folder("draw", &format!("[{}]", entries.join(",")));
    let c = Conversations::open(&dir.join("data.json"), None, &ImageLimits::default()).unwrap();
    let ids = |seed, step, n| c.draw(seed, step, n).iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    // Steps of 4 over 10 entries: steps 0-4 are two epochs.
    let all: Vec<String> = (0..5).flat_map(|step| ids(1, step, 4)).collect();
    for epoch in all.chunks(10) {
        let mut sorted = epoch.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 10, "an epoch repeated an entry: {epoch:?}");
    }
    assert_ne!(all[..10], all[10..], "both epochs drew the same order");
    assert_eq!(ids(1, 3, 4), ids(1, 3, 4), "a step draws the same entries again");
    assert_ne!(ids(1, 0, 10), ids(2, 0, 10), "the seed does not change the order");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn settings_that_cannot_work_are_named() {
    let settings = |f: &dyn Fn(&mut ConversationsConfig)| {
        let mut c = ConversationsConfig { train: Some("t.json".into()), ..Default::default() };
        f(&mut c);
        c
    };
    assert_eq!(settings(&|_| {}).validate(true, None), Ok(()));
    for (c, base, heads, expected) in [
        (settings(&|_| {}), false, None, "conversations.train (t.json) fine-tunes a model: set base"),
        (settings(&|_| {}), true, Some("dense.warmup_steps"), "dense.warmup_steps learns from the scenes' labels"),
        (settings(&|c| c.max_pixels = Some(0)), true, None, "must be at least 1"),
        (settings(&|c| c.video_frames = 0), true, None, "must be at least 1"),
        (settings(&|c| c.max_image_pixels = 0), true, None, "must be at least 1"),
        (
            settings(&|c| (c.train, c.eval) = (None, Some("e.json".into()))),
            true,
            None,
            "conversations.eval (e.json) is set without conversations.train",
        ),
    ] {
        let message = c.validate(base, heads).unwrap_err();
        assert!(message.contains(expected), "{message}");
    }
}

/// The README's example data and config stay valid.
#[test]
fn the_example_conversations_and_config_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let c = Conversations::open(&root.join("examples/conversations.jsonl"), None, &ImageLimits::default()).unwrap();
    assert_eq!(c.entries.len(), 5);
    assert_eq!(c.entries.iter().map(|e| e.messages.len() / 2).sum::<usize>(), 6, "answers");
    assert_eq!(c.entries[4].videos, vec![root.join("examples/moving")]);
    let config =
        super::super::config::TrainConfig::from_file(&root.join("configs/conversations-example.toml")).unwrap();
    assert_eq!(config.conversations.train, Some(PathBuf::from("examples/conversations.jsonl")));
    assert_eq!(config.base, Some(PathBuf::from("models/builtin")));
}
