//! Writes the README's example images to `examples/`: scenes drawn from the same generator the
//! built-in model was trained on (a seed never used in training), picked so that the README's
//! questions have clear answers. `cargo run -p ocular --example make_examples`.

use ocular::train::scenes::{relation_answer, scene, Colour, Generator, Relation, Rng, SceneConfig, Shape, Task};

fn main() {
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    std::fs::create_dir_all(&out).expect("create examples/");
    let config = SceneConfig {
        min_side: 160,
        max_side: 224,
        texture_prob: 0.0,
        min_objects: 4,
        max_objects: 4,
        ..Default::default()
    };

    // scene.png: a red circle with a blue square clearly to its left, and a blue square to find.
    let mut rng = Rng::seed_from_u64(0x0C_0A_2026);
    let chosen = loop {
        let s = scene(&mut rng, &config);
        let (Some(red), Some(blue)) = (s.find(Colour::Red, Shape::Circle), s.find(Colour::Blue, Shape::Square)) else {
            continue;
        };
        if relation_answer(&s, red, Relation::LeftOf) == Some(blue) {
            break s;
        }
    };
    chosen.render().save(out.join("scene.png")).expect("write scene.png");
    println!("scene.png: {}", ocular::train::scenes::caption_text(&chosen));

    // two_a.png / two_b.png: a pair from the multi-image task.
    let mut gen = Generator::new(0x0C_0A_2027, SceneConfig { min_side: 160, max_side: 224, ..Default::default() });
    let pair = gen.example(Task::MultiImage);
    for (img, name) in pair.images.iter().zip(["two_a.png", "two_b.png"]) {
        img.save(out.join(name)).expect("write a pair image");
    }
    println!("two_a.png + two_b.png: {} -> {}", pair.question, pair.answer);

    // moving/: the frames of a video-task example.
    let clip = gen.example(Task::Video);
    let dir = out.join("moving");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create examples/moving");
    for (i, frame) in clip.video.iter().flatten().enumerate() {
        frame.save(dir.join(format!("frame_{i:02}.png"))).expect("write a frame");
    }
    println!("moving/: {} -> {}", clip.question, clip.answer);
}
