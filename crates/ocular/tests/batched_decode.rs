//! Sessions stepped together (the server's batched decode) give what each gives alone: the
//! same logits within float noise and the same greedy tokens, for both decoder families.

use std::path::{Path, PathBuf};

use ocular::image::{load_image, ImageLimits};
use ocular::models::Media;
use ocular::pipeline::{GenerateOptions, Pipeline};
use ocular::prompt::Message;

fn model(family: &str, case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(family).join(case)
}

fn check(family: &str, case: &str) {
    let dir = model(family, case);
    let pipeline = Pipeline::load(dir.join("model"), &Default::default()).unwrap();
    let image = load_image(&dir.join("img0.png"), &ImageLimits::default()).unwrap();
    // Prompts of different lengths, with and without the image, so caches and positions differ.
    let prompts: Vec<_> =
        [("Describe this picture.", 1), ("What colour is the sky in this picture, and why?", 1), ("Hello", 0)]
            .iter()
            .map(|(text, images)| {
                let media = Media { images: vec![image.clone(); *images], ..Default::default() };
                pipeline.prepare_chat(&[Message::user(text, *images)], &media).unwrap()
            })
            .collect();
    let opts = GenerateOptions { sampling: Default::default(), max_new_tokens: 12, stop: vec![] };
    let alone: Vec<Vec<u32>> =
        prompts.iter().map(|p| pipeline.generate(p, &opts, &mut |_| {}).unwrap().tokens).collect();

    let mut sessions: Vec<_> = prompts.iter().map(|p| pipeline.start(p, &opts).unwrap()).collect();
    loop {
        let mut refs: Vec<_> = sessions.iter_mut().collect();
        let steps = pipeline.step_all(&mut refs);
        if steps.iter().all(|s| matches!(s, Ok(None))) {
            break;
        }
        assert!(steps.iter().all(|s| s.is_ok()));
    }
    let together: Vec<Vec<u32>> = sessions.into_iter().map(|s| s.finish().tokens).collect();
    assert_eq!(together, alone, "{family}/{case}: batched greedy tokens differ from one-at-a-time");
    assert!(alone.iter().all(|t| !t.is_empty()));

    // The logits themselves: one batched step against three single steps.
    let mut batch_states = Vec::new();
    let mut single = Vec::new();
    for p in &prompts {
        let mut state = pipeline.model.new_state();
        pipeline.model.prefill(p, &mut state).unwrap();
        let mut other = pipeline.model.new_state();
        pipeline.model.prefill(p, &mut other).unwrap();
        single.push(pipeline.model.decode(7, &mut other).unwrap().to_vec1::<f32>().unwrap());
        batch_states.push(state);
    }
    let mut refs: Vec<_> = batch_states.iter_mut().collect();
    let rows = pipeline.model.decode_batch(&[7, 7, 7], &mut refs).unwrap().to_vec2::<f32>().unwrap();
    for (r, s) in rows.iter().zip(&single) {
        let gap = r.iter().zip(s).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(gap < 1e-5, "{family}/{case}: batched logits differ by {gap}");
    }
}

#[test]
fn qwen2_vl_batched_decode_matches_single() {
    check("qwen2_vl", "hub_layout");
}

#[test]
fn llava_batched_decode_matches_single() {
    check("llava", "one_image");
}
