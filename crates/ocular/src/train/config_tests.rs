use super::*;

#[test]
fn a_config_with_an_unknown_field_or_a_wrong_type_names_the_line_and_the_field() {
    let path = std::env::temp_dir().join(format!("ocular-config-{}.toml", std::process::id()));
    let error = |text: &str| {
        std::fs::write(&path, text).unwrap();
        TrainConfig::from_file(&path).unwrap_err().to_string()
    };
    let e = error("seed = 1\n\n[optim]\nsteps = 10\npointer_objectz = true\n");
    assert!(e.contains(".toml: invalid config: line 5: unknown field `pointer_objectz`"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let e = error("[optim]\nsteps = \"ten\"\n");
    assert!(e.contains("line 2: invalid type: string \"ten\", expected"), "{e}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_patch_smaller_than_two_pixels_is_refused_by_name() {
    let mut config = TrainConfig::default();
    assert!(config.validate().is_ok());
    config.model.vision_patch_size = 1;
    let e = config.validate().unwrap_err();
    assert!(e.contains("model.vision_patch_size 1"), "{e}");
}

#[test]
fn an_mrope_section_must_cover_the_text_head() {
    let config = |text: &str| {
        let c: TrainConfig = toml::from_str(text).unwrap();
        c.validate().map(|_| c.model.mrope_section)
    };
    assert_eq!(config("[model]\nmrope_section = [4, 8, 20]"), Ok(Some([4, 8, 20])));
    assert_eq!(config("[model]\ntext_hidden = 256"), Ok(None));
    let e = config("[model]\nmrope_section = [4, 8, 8]").unwrap_err();
    assert!(e.contains("model.mrope_section [4, 8, 8]") && e.contains("head_dim / 2 = 32"), "{e}");
}

#[test]
fn a_negative_vision_lr_scale_is_refused_by_name() {
    let mut config = TrainConfig::default();
    config.optim.vision_lr_scale = 0.0;
    assert!(config.validate().is_ok(), "0 freezes the vision side");
    config.dense.weight = 0.5;
    let e = config.validate().unwrap_err();
    assert!(e.contains("dense.weight 0.5") && e.contains("optim.vision_lr_scale 0"), "{e}");
    config.dense.weight = 0.0;
    config.optim.vision_lr_scale = -0.5;
    let e = config.validate().unwrap_err();
    assert!(e.contains("optim.vision_lr_scale -0.5"), "{e}");
}

#[test]
fn pointer_settings_without_the_pointer_they_refine_are_refused() {
    let config = |text: &str| toml::from_str::<TrainConfig>(text).unwrap().validate();
    assert!(config("[optim]\npointer_layer = 1\npointer_objects = true\npointer_absent = true").is_ok());
    for (text, expected) in [
        ("[optim]\npointer_objects = true", "optim.pointer_objects needs optim.pointer_layer"),
        ("[optim]\npointer_layer = 1\npointer_absent = true", "optim.pointer_absent needs optim.pointer_objects"),
    ] {
        let e = config(text).unwrap_err();
        assert!(e.contains(expected), "{text}: {e}");
    }
}

#[test]
fn dense_labels_follow_the_config_and_two_at_once_are_refused_by_name() {
    let mut config = TrainConfig::default();
    assert_eq!(config.dense.labels(), DenseLabels::Centre);
    config.dense.covered = true;
    assert_eq!(config.dense.labels(), DenseLabels::Covered);
    assert!(config.validate().is_ok());
    config.dense.centres = true;
    let e = config.validate().unwrap_err();
    assert!(e.contains("dense.centres") && e.contains("dense.covered"), "{e}");
}

#[test]
fn a_dense_stage_without_scenes_is_refused_by_name() {
    let mut config = TrainConfig::default();
    config.dense.warmup_batch_size = 0;
    assert!(config.validate().is_ok(), "a disabled dense stage is not checked");
    config.dense.warmup_steps = 10;
    let e = config.validate().unwrap_err();
    assert!(e.contains("dense.warmup_batch_size 0"), "{e}");
    config.dense.warmup_batch_size = 16;
    config.dense.min_lr_ratio = 1.5;
    let e = config.validate().unwrap_err();
    assert!(e.contains("dense.min_lr_ratio 1.5"), "{e}");
    config.dense.min_lr_ratio = 0.1;
    config.dense.decay_steps = 20;
    let e = config.validate().unwrap_err();
    assert!(e.contains("dense.decay_steps 20") && e.contains("dense.warmup_steps 10"), "{e}");
}

#[test]
fn loss_weighting_parses_and_an_unknown_one_is_named() {
    let parse = |text: &str| toml::from_str::<TrainConfig>(text).map_err(|e| e.to_string());
    assert_eq!(parse("").unwrap().optim.loss_weighting, LossWeighting::Token);
    let config = parse("[optim]\nloss_weighting = \"answer\"").unwrap();
    assert_eq!(config.optim.loss_weighting, LossWeighting::Answer);
    let e = parse("[optim]\nloss_weighting = \"example\"").unwrap_err();
    assert!(e.contains("example") && e.contains("answer"), "{e}");
}

#[test]
fn dense_label_switches_parse_with_the_first_runs_defaults_and_a_misspelt_one_is_named() {
    let parse = |text: &str| toml::from_str::<TrainConfig>(text).map_err(|e| e.to_string());
    let d = parse("").unwrap().dense;
    assert_eq!((d.relations_none, d.inventory, d.order, d.videos, d.min_lr_ratio), (true, false, false, 0, 1.0));
    let d = parse("[dense]\nrelations_none = false\ninventory = true\norder = true\nvideos = 2").unwrap().dense;
    assert_eq!((d.relations_none, d.inventory, d.order, d.videos), (false, true, true, 2));
    let e = parse("[dense]\nvideo = 2").unwrap_err();
    assert!(e.contains("video") && e.contains("videos"), "{e}");
}

#[test]
fn the_committed_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut files = vec![root.join("builtin.toml")];
    for entry in std::fs::read_dir(root.join("experiments")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for file in &files {
        let config = TrainConfig::from_file(file).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.optim.steps > 0, "{}", file.display());
    }
    let experiment = TrainConfig::from_file(&root.join("experiments/dense-text-first.toml")).unwrap();
    assert!(experiment.model.text_before_media && experiment.dense.warmup_steps > 0);
}
