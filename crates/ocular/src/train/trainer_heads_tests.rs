//! Tests of the auxiliary heads' part in the training loop: the dense head on the vision
//! tokens (`train::dense`) and the position head on the language model's image tokens
//! (`train::position`).
use super::super::*;
use super::{scratch, tiny};
use crate::train::config::Dense;
use crate::train::heads::POSITION_HEAD_FILE;
use crate::train::pointer::Pointer;
use crate::train::scenes::Task;
use std::path::Path;

#[test]
fn dense_warm_up_trains_the_vision_tower_first_and_its_head_stays_out_of_the_model() {
    let out = scratch("train-dense");
    let mut config = tiny(&out, 2);
    config.dense =
        Dense { warmup_steps: 8, warmup_batch_size: 4, batch_size: 2, lr: 3e-3, weight: 0.5, ..Default::default() };
    let mut trainer = Trainer::new(config.clone(), false).unwrap();
    let (mut seen, mut rates) = (vec![], vec![]);
    trainer
        .run(&mut |p| {
            seen.push((p.step, p.steps, p.loss, p.dense.map(|d| d.colour + d.shape)));
            rates.push(p.rate);
        })
        .unwrap();
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    // The warm-up's pace is counted in images, the question steps' in tokens.
    assert!(rates[..8].iter().all(|r| matches!(r, Rate::ImagesPerSec(x) if *x > 0.0)), "{rates:?}");
    assert!(rates[8..].iter().all(|r| matches!(r, Rate::TokensPerSec(x) if *x > 0.0)), "{rates:?}");
    assert!(seen.iter().all(|s| s.1 == 10 && s.3.is_some()), "{seen:?}");
    // Warm-up steps report the dense loss itself, and it falls; question steps report answers.
    let reports_dense = |s: &(usize, usize, f32, Option<f32>)| (s.2 - s.3.unwrap()).abs() < 1e-5;
    assert!(seen[..8].iter().all(reports_dense), "{seen:?}");
    assert!(seen[7].2 < seen[0].2, "dense loss {} -> {}", seen[0].2, seen[7].2);
    assert!(!seen[8..].iter().any(reports_dense), "{seen:?}");

    // The model folder holds the model's tensors only; the checkpoint keeps the head.
    let saved = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(saved.keys().all(|k| !k.starts_with("dense_head")), "{:?}", saved.keys());
    assert!(out.join("checkpoint").join(DENSE_HEAD_FILE).is_file());
    let mut more = config;
    more.optim.steps = 3;
    let mut resumed = Trainer::new(more, true).unwrap();
    assert_eq!(resumed.step(), 10);
    let mut steps = vec![];
    resumed.run(&mut |p| steps.push(p.step)).unwrap();
    assert_eq!(steps, vec![11]);
    let _ = std::fs::remove_dir_all(&out);
}

/// Centre labels add the "no centre" and size parts to the dense loss, which all fall; the
/// plain labels report neither; covered labels report size, and relation and count labels theirs.
#[test]
fn centre_and_covered_labels_add_their_parts_and_they_fall() {
    let out = scratch("train-dense-centres");
    let mut config = tiny(&out, 1);
    // 4 x 4 merged tokens, so that every image has tokens without a centre.
    config.model.max_pixels = 112 * 112;
    config.model.min_pixels = 112 * 112;
    config.dense = Dense {
        warmup_steps: 12,
        warmup_batch_size: 4,
        batch_size: 2,
        lr: 3e-3,
        weight: 0.0,
        centres: true,
        ..Default::default()
    };
    let mut seen = vec![];
    Trainer::new(config.clone(), false).unwrap().run(&mut |p| seen.extend(p.dense)).unwrap();
    assert_eq!(seen.len(), 12, "{seen:?}");
    let sum = |d: &DenseParts| d.colour + d.shape + d.elsewhere.unwrap() + d.size.unwrap();
    let (first, last) = (sum(&seen[0]), sum(&seen[11]));
    assert!(last < first, "dense loss {first} -> {last}");
    // "no centre" starts near chance among the 6 shape classes, size among 2.
    assert!((seen[0].elsewhere.unwrap() - 6f32.ln()).abs() < 0.5, "{:?}", seen[0]);
    assert!((seen[0].size.unwrap() - 2f32.ln()).abs() < 0.3, "{:?}", seen[0]);
    config.dense.centres = false;
    let _ = std::fs::remove_dir_all(&out);
    let mut plain = vec![];
    Trainer::new(config.clone(), false).unwrap().run(&mut |p| plain.extend(p.dense)).unwrap();
    assert!(plain.iter().all(|d| d.elsewhere.is_none() && d.size.is_none()), "{plain:?}");
    let _ = std::fs::remove_dir_all(&out);
    assert!(plain.iter().all(|d| d.relation.is_none() && d.count.is_none()), "{plain:?}");
    // Covered labels report size (where shape is labelled) but no "no centre" part; relation
    // labels add theirs, starting near chance (8 colour classes, 6 shape classes).
    config.dense.covered = true;
    config.dense.relations = true;
    config.dense.counts = true;
    let mut covered = vec![];
    Trainer::new(config, false).unwrap().run(&mut |p| covered.extend(p.dense)).unwrap();
    assert!(covered.iter().all(|d| d.elsewhere.is_none() && d.size.is_some()), "{covered:?}");
    let chance = (8f32.ln() + 6f32.ln()) / 2.0;
    assert!((covered[0].relation.unwrap() - chance).abs() < 0.5, "{:?}", covered[0]);
    // Counts start near chance among 9 classes.
    assert!((covered[0].count.unwrap() - 9f32.ln()).abs() < 0.5, "{:?}", covered[0]);
    let sum = |d: &DenseParts| d.colour + d.shape + d.size.unwrap() + d.relation.unwrap() + d.count.unwrap();
    assert!(sum(&covered[11]) < sum(&covered[0]), "{:?} -> {:?}", covered[0], covered[11]);
    let _ = std::fs::remove_dir_all(&out);
}

/// Inventory and order labels and moving clips add their parts, which start near chance and fall; the
/// clips' tokens report motion and scenes without relations none.
#[test]
fn inventory_order_and_motion_labels_add_their_parts_and_they_fall() {
    let out = scratch("train-dense-inventory");
    let mut config = tiny(&out, 1);
    config.model.max_pixels = 112 * 112;
    config.model.min_pixels = 112 * 112;
    config.dense = Dense {
        warmup_steps: 12,
        warmup_batch_size: 3,
        lr: 3e-3,
        covered: true,
        inventory: true,
        order: true,
        videos: 2,
        ..Default::default()
    };
    let mut seen = vec![];
    Trainer::new(config, false).unwrap().run(&mut |p| seen.extend(p.dense)).unwrap();
    assert_eq!(seen.len(), 12, "{seen:?}");
    assert!(seen.iter().all(|d| d.relation.is_none() && d.count.is_none()), "{seen:?}");
    // 12 counts among 9 classes and 35 pairs present or not; 4 directions or still.
    let chance = (12.0 * 9f32.ln() + 35.0 * 2f32.ln()) / 47.0;
    assert!((seen[0].inventory.unwrap() - chance).abs() < 0.3, "{:?}", seen[0]);
    assert!((seen[0].motion.unwrap() - 5f32.ln()).abs() < 0.5, "{:?}", seen[0]);
    // Places among 9, the next object's colour among 8 and shape among 6.
    let order_chance = (9f32.ln() + 8f32.ln() + 6f32.ln()) / 3.0;
    assert!((seen[0].order.unwrap() - order_chance).abs() < 0.5, "{:?}", seen[0]);
    let mean = |f: &dyn Fn(&DenseParts) -> f32, r: std::ops::Range<usize>| {
        seen[r.clone()].iter().map(f).sum::<f32>() / r.len() as f32
    };
    let inventory = |d: &DenseParts| d.inventory.unwrap();
    let motion = |d: &DenseParts| d.motion.unwrap();
    assert!(mean(&inventory, 9..12) < mean(&inventory, 0..3), "{seen:?}");
    assert!(mean(&motion, 9..12) < mean(&motion, 0..3), "{seen:?}");
    let order = |d: &DenseParts| d.order.unwrap();
    assert!(mean(&order, 9..12) < mean(&order, 0..3), "{seen:?}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn resuming_with_a_dense_stage_the_checkpoint_lacks_names_the_missing_file() {
    let out = scratch("train-dense-missing");
    let mut config = tiny(&out, 1);
    Trainer::new(config.clone(), false).unwrap().run(&mut |_| {}).unwrap();
    config.optim.steps = 2;
    config.dense.weight = 0.5;
    let e = Trainer::new(config, true).err().expect("the checkpoint has no dense head").to_string();
    assert!(e.contains(DENSE_HEAD_FILE) && !e.contains('\n'), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}

/// A position head adds its part on question steps, which starts near chance and falls; it is
/// kept in the checkpoint and out of the model folder, and a layer past the model's is refused.
#[test]
fn the_position_head_learns_where_image_tokens_lie_and_stays_out_of_the_model() {
    let out = scratch("train-position");
    let mut config = tiny(&out, 16);
    config.optim.position_layer = 1;
    let mut seen = vec![];
    Trainer::new(config.clone(), false).unwrap().run(&mut |p| seen.push(p.position)).unwrap();
    let seen: Vec<f32> = seen.into_iter().map(|p| p.expect("every question step has images")).collect();
    assert!((seen[0] - 10f32.ln()).abs() < 0.5, "{seen:?}");
    let mean = |r: std::ops::Range<usize>| seen[r.clone()].iter().sum::<f32>() / r.len() as f32;
    assert!(mean(12..16) < mean(0..4) - 0.3, "{seen:?}");
    let saved = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(saved.keys().all(|k| !k.starts_with("position_head")), "{:?}", saved.keys());
    assert!(out.join("checkpoint").join(POSITION_HEAD_FILE).is_file());
    config.optim.position_layer = 2;
    let e = Trainer::new(config, false).err().expect("the tiny model has 1 layer").to_string();
    assert!(e.contains("optim.position_layer 2") && e.contains("1 layers"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}

/// A dense warm-up's checkpoint resumes with a position head added for the question steps
/// (one warm-up, several question stages); past the first question step it is refused by name.
#[test]
fn a_position_head_may_join_a_run_at_its_first_question_step_only() {
    let out = scratch("train-position-join");
    let mut config = tiny(&out, 1);
    config.dense = Dense { warmup_steps: 4, warmup_batch_size: 2, ..Default::default() };
    config.optim.checkpoint_every = 4;
    let (checkpoint, kept) = (out.join("checkpoint"), out.join("warm-up"));
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in ["model.safetensors", "optimizer.safetensors", DENSE_HEAD_FILE] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    };
    Trainer::new(config.clone(), false)
        .unwrap()
        .run(&mut |p| {
            if p.step == 4 {
                copy(&checkpoint, &kept);
            }
        })
        .unwrap();
    config.optim.position_layer = 1;
    config.optim.steps = 3;
    // The final checkpoint (step 5) is one question step in.
    let e = Trainer::new(config.clone(), true).err().expect("past the warm-up").to_string();
    assert!(e.contains(POSITION_HEAD_FILE) && e.contains("question step 1") && !e.contains('\n'), "{e}");
    // The warm-up's own checkpoint takes the new head.
    copy(&kept, &checkpoint);
    let mut seen = vec![];
    Trainer::new(config, true).unwrap().run(&mut |p| seen.push((p.step, p.position.is_some()))).unwrap();
    assert_eq!(seen, vec![(5, true), (6, true), (7, true)]);
    assert!(checkpoint.join(POSITION_HEAD_FILE).is_file());
    let _ = std::fs::remove_dir_all(&out);
}

/// Box labels ([dense] boxes) have a head of their own, so that a finished warm-up resumes with
/// them added: the head starts seeded, reports its part, and is saved with the checkpoint.
#[test]
fn box_labels_join_a_resumed_warm_up_with_a_head_of_their_own() {
    let out = scratch("train-boxes-join");
    let mut config = tiny(&out, 0);
    config.dense = Dense { warmup_steps: 2, warmup_batch_size: 2, covered: true, ..Default::default() };
    let mut seen = vec![];
    Trainer::new(config.clone(), false).unwrap().run(&mut |p| seen.extend(p.dense.map(|d| d.boxes))).unwrap();
    assert_eq!(seen, vec![None, None]);
    assert!(!out.join("checkpoint").join(BOX_HEAD_FILE).exists());
    config.dense.warmup_steps = 6;
    config.dense.boxes = true;
    let mut boxes = vec![];
    Trainer::new(config, true).unwrap().run(&mut |p| boxes.extend(p.dense.and_then(|d| d.boxes))).unwrap();
    // Four steps of four edges of ten tenths each: about ln 10 per edge at first.
    assert_eq!(boxes.len(), 4, "{boxes:?}");
    assert!(boxes.iter().all(|b| b.is_finite() && *b > 0.5 && *b < 4.0), "{boxes:?}");
    assert!(out.join("checkpoint").join(BOX_HEAD_FILE).is_file());
    let _ = std::fs::remove_dir_all(&out);
}

/// The pointer loss ([optim] pointer_layer) supervises where one head of the language model
/// looks from each row of a box answer: at the image tokens its box covers. Samples carry
/// those rows and tokens; the loss starts near the uniform attention's and falls; it runs
/// beside the position head; a layer or head the model lacks is refused by name.
#[test]
fn the_pointer_loss_teaches_a_head_to_look_at_the_boxed_object() {
    let out = scratch("train-pointer");
    let mut config = tiny(&out, 12);
    config.model.text_layers = 2;
    // 4 x 4 merged tokens.
    (config.model.min_pixels, config.model.max_pixels) = (112 * 112, 112 * 112);
    config.data.tasks = vec![Task::Grounding];
    config.optim.pointer_layer = 1;
    config.optim.pointer_head = 3;
    let trainer = Trainer::new(config.clone(), false).unwrap();
    let samples = trainer.samples(&mut generator(&config, 0), 2).unwrap();
    let tok = trainer.model.tokenizer();
    let (open, close) = (tok.token_id("<|box_start|>").unwrap(), tok.token_id("<|box_end|>").unwrap());
    let image = trainer.model.as_qwen2_vl().unwrap().config().image_token_id;
    let mut covered = vec![];
    for s in &samples {
        assert_eq!(s.pointers.len(), s.answers.len());
        for p in &s.pointers {
            let ids = &s.prepared.ids;
            assert_eq!(ids[p.queries[0] as usize], open);
            assert_eq!(ids[*p.queries.last().unwrap() as usize + 1], close);
            assert!(p.queries.windows(2).all(|w| w[1] == w[0] + 1), "{:?}", p.queries);
            assert!(!p.keys.is_empty() && p.keys.iter().all(|&k| ids[k as usize] == image), "{p:?}");
            covered.push(p.keys.len() as f32 / 16.0);
        }
    }
    // Attention spread evenly over the image (and the text) holds at most the box's share.
    let chance = covered.iter().map(|c| -c.ln()).sum::<f32>() / covered.len() as f32;
    let mut seen = vec![];
    let mut trainer = trainer;
    trainer.run(&mut |p| seen.push(p.pointer.expect("every sample has a box"))).unwrap();
    assert!(seen[0] > chance && seen[0] < chance + 3.0, "{seen:?} against {chance}");
    let mean = |r: std::ops::Range<usize>| seen[r.clone()].iter().sum::<f32>() / r.len() as f32;
    assert!(mean(8..12) < mean(0..4) - 0.3, "{seen:?}");

    // With pointer_objects, answers about objects point too, from every answer row.
    let _ = std::fs::remove_dir_all(&out);
    let mut objects = config.clone();
    objects.data.tasks = vec![Task::Attribute, Task::Count, Task::Relation];
    (objects.optim.pointer_objects, objects.optim.steps) = (true, 2);
    // With the position head at the same layer too: both read their own tap.
    objects.optim.position_layer = 1;
    let mut trainer = Trainer::new(objects.clone(), false).unwrap();
    let samples = trainer.samples(&mut generator(&objects, 0), 8).unwrap();
    let pointers: Vec<&Pointer> = samples.iter().flat_map(|s| &s.pointers).collect();
    assert!(pointers.len() >= 2 && pointers.iter().all(|p| !p.grounding), "{pointers:?}");
    let start = trainer.model.tokenizer().token_id("<|vision_start|>").unwrap();
    assert!(pointers.iter().any(|p| p.absent), "no answer about a missing object drawn: {pointers:?}");
    for s in &samples {
        for p in &s.pointers {
            assert!(s.answers.iter().any(|a| s.rows[a.clone()] == p.queries[..]), "{p:?}");
            // An answer about what the scene lacks points at the image's start token.
            let keys = if p.absent { start } else { image };
            assert!(!p.keys.is_empty() && p.keys.iter().all(|&k| s.prepared.ids[k as usize] == keys), "{p:?}");
            if p.absent {
                assert_eq!((p.keys.len(), s.prepared.ids[p.keys[0] as usize + 1]), (1, image), "{p:?}");
            }
        }
    }
    let mut reported = vec![];
    trainer.run(&mut |p| reported.push((p.pointer, p.position))).unwrap();
    let finite = |x: Option<f32>| x.is_some_and(f32::is_finite);
    assert!(reported.iter().all(|&(p, q)| finite(p) && finite(q)), "{reported:?}");
    config.optim.pointer_layer = 2;
    let e = Trainer::new(config.clone(), false).err().expect("the layer after 2 is missing").to_string();
    assert!(e.contains("optim.pointer_layer 2") && e.contains("2 layers"), "{e}");
    (config.optim.pointer_layer, config.optim.pointer_head) = (1, 4);
    let e = Trainer::new(config, false).err().expect("4 heads").to_string();
    assert!(e.contains("optim.pointer_head 4") && e.contains("4 attention heads"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}

/// The object box head ([optim] box_layer) teaches every image token an answer's object covers
/// the digits of that object's box, as the answer spells them; it runs beside the position
/// head and the pointer (three taps), trains (its weights move), stays out of the model
/// folder, and a checkpoint past its first question step without it is refused by name.
/// Whether it learns is for real runs: the tiny model's streams know too little of where
/// their tokens lie for a few steps to lower it.
#[test]
fn the_object_box_head_trains_on_the_digits_of_the_covered_objects_box() {
    let out = scratch("train-object-box");
    let mut config = tiny(&out, 3);
    config.model.text_layers = 2;
    (config.model.min_pixels, config.model.max_pixels) = (112 * 112, 112 * 112);
    config.data.tasks = vec![Task::Grounding];
    (config.optim.box_layer, config.optim.position_layer, config.optim.pointer_layer) = (1, 1, 1);
    let trainer = Trainer::new(config.clone(), false).unwrap();
    let samples = trainer.samples(&mut generator(&config, 0), 2).unwrap();
    let image = trainer.model.as_qwen2_vl().unwrap().config().image_token_id;
    for s in &samples {
        assert_eq!(s.boxes.len(), s.answers.len(), "one box per grounding answer");
        for (b, p) in s.boxes.iter().zip(&s.pointers) {
            assert_eq!(b.keys, p.keys);
            assert!(b.keys.iter().all(|&k| s.prepared.ids[k as usize] == image), "{b:?}");
        }
    }
    // Each box's digits are those its answer spells: "(x1,y1),(x2,y2)" -> hundreds and tens.
    let tok = trainer.model.tokenizer();
    for s in &samples {
        for (b, a) in s.boxes.iter().zip(&s.answers) {
            let text = tok.decode(&s.targets[a.clone()], false).unwrap();
            let inner = text.split("<|box_start|>").nth(1).unwrap().split("<|box_end|>").next().unwrap();
            let numbers: Vec<u32> = inner
                .split(|c: char| !c.is_ascii_digit())
                .filter(|t| !t.is_empty())
                .map(|t| t.parse().unwrap())
                .collect();
            let spelled: Vec<u32> = numbers.iter().flat_map(|&v| [v.min(999) / 100, v.min(999) / 10 % 10]).collect();
            assert_eq!(spelled, b.digits, "{text}");
        }
    }
    let head_weight = |t: &Trainer| {
        let (_, vars) = t.heads.object_box.as_ref().unwrap();
        let data = vars.data().lock().unwrap();
        data["object_box_head.weight"].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let before = head_weight(&trainer);
    let mut seen = vec![];
    let mut trainer = trainer;
    trainer.run(&mut |p| seen.push((p.object_box, p.position, p.pointer))).unwrap();
    assert!(seen.iter().all(|&(b, q, p)| b.is_some() && q.is_some() && p.is_some()), "{seen:?}");
    // Ten digits a group: about ln 10 each at first.
    let first = seen[0].0.unwrap();
    assert!((first - 10f32.ln()).abs() < 0.3, "{seen:?}");
    assert_ne!(head_weight(&trainer), before);
    let saved = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(saved.keys().all(|k| !k.starts_with("object_box_head")), "{:?}", saved.keys());
    let file = crate::train::heads::OBJECT_BOX_HEAD_FILE;
    assert!(out.join("checkpoint").join(file).is_file());
    // Resumed past its first question step without it: refused, naming the file and the head.
    std::fs::remove_file(out.join("checkpoint").join(file)).unwrap();
    config.optim.steps = 5;
    let e = Trainer::new(config.clone(), true).err().expect("no head in the checkpoint").to_string();
    assert!(e.contains(file) && e.contains("object box head") && e.contains("question step 3"), "{e}");
    config.optim.box_layer = 3;
    let e = Trainer::new(config, false).err().expect("2 layers").to_string();
    assert!(e.contains("optim.box_layer 3") && e.contains("2 layers"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}

/// The language model's stream heads start seeded (the same weights for the same seed) and a
/// resumed run reads them back from its checkpoint, so runs with them repeat bit for bit.
#[test]
fn stream_heads_start_seeded_and_resume_from_the_checkpoint() {
    let out = scratch("train-stream-heads-seeded");
    let mut config = tiny(&out, 2);
    (config.optim.position_layer, config.optim.box_layer) = (1, 1);
    let weights = |t: &Trainer| -> Vec<Vec<f32>> {
        let position = &t.heads.position.as_ref().unwrap().1;
        let object_box = &t.heads.object_box.as_ref().unwrap().1;
        [(position, "position_head.weight"), (object_box, "object_box_head.weight")]
            .iter()
            .map(|(vars, name)| {
                let data = vars.data().lock().unwrap();
                data[*name].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
            .collect()
    };
    let mut trainer = Trainer::new(config.clone(), false).unwrap();
    let seeded = weights(&trainer);
    assert_eq!(weights(&Trainer::new(config.clone(), false).unwrap()), seeded);
    trainer.run(&mut |_| {}).unwrap();
    let trained = weights(&trainer);
    assert_ne!(trained, seeded);
    assert_eq!(weights(&Trainer::new(config, true).unwrap()), trained);
    let _ = std::fs::remove_dir_all(&out);
}

/// The inventory head ([optim] inventory_layer) labels each image's `<|vision_end|>` token
/// with that image's scene's tally (two for a comparison of two images, none for a video),
/// starts at chance, trains, stays out of the model folder, and a layer past the model's is
/// refused by name.
#[test]
fn the_inventory_head_learns_each_image_s_tally_at_its_end_token() {
    use crate::train::dense::{inventory_classes, COUNT_CLASSES};
    use crate::train::heads::INVENTORY_HEAD_FILE;
    let out = scratch("train-inventory");
    let mut config = tiny(&out, 3);
    config.optim.inventory_layer = 1;
    let trainer = Trainer::new(config.clone(), false).unwrap();
    let end = trainer.model.tokenizer().token_id("<|vision_end|>").unwrap();
    let mut generator = crate::train::scenes::Generator::new(5, config.data.clone());
    let mut kinds = std::collections::HashSet::new();
    while kinds.len() < 3 {
        let group = generator.group(3);
        let s = sample(trainer.model.as_ref(), &trainer.chat, &group).unwrap();
        let first = &group[0];
        kinds.insert(first.images.len());
        assert_eq!(s.inventories.len(), first.images.len(), "{:?}", first.kind);
        assert_eq!(first.scenes.len(), first.images.len());
        for (label, scene) in s.inventories.iter().zip(&first.scenes) {
            assert_eq!(s.prepared.ids[label.row as usize], end);
            assert_eq!((label.counts.clone(), label.pairs.clone()), inventory_classes(scene));
        }
    }
    let head_weight = |t: &Trainer| {
        let data = t.heads.inventory.as_ref().unwrap().1.data().lock().unwrap();
        data["inventory_head.weight"].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let before = head_weight(&trainer);
    let mut trainer = trainer;
    let mut seen = vec![];
    trainer.run(&mut |p| seen.push(p.inventory)).unwrap();
    // Per label: 9-way counts and 2-way presence, so chance is between ln 2 and ln 9.
    let first = seen[0].expect("the first step has images");
    assert!(first > 2f32.ln() && first < (COUNT_CLASSES as f32).ln(), "{seen:?}");
    assert_ne!(head_weight(&trainer), before);
    let saved = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(saved.keys().all(|k| !k.starts_with("inventory_head")), "{:?}", saved.keys());
    assert!(out.join("checkpoint").join(INVENTORY_HEAD_FILE).is_file());
    config.optim.inventory_layer = 2;
    let e = Trainer::new(config.clone(), false).err().expect("the tiny model has 1 layer").to_string();
    assert!(e.contains("optim.inventory_layer 2") && e.contains("1 layers"), "{e}");
    config.optim.inventory_weight = -1.0;
    let e = config.validate().unwrap_err();
    assert!(e.contains("optim.inventory_weight -1"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}

/// Count and existence answers' pointers carry the image's `<|vision_end|>` token as their
/// tally (what `pointer_tally` teaches them to look at), other answers none; the option needs
/// `pointer_objects` and an inventory head, and a run with it reports the pointer part.
#[test]
fn count_and_existence_pointers_carry_the_image_s_end_token() {
    let out = scratch("train-tally");
    let mut config = tiny(&out, 2);
    config.model.text_layers = 2;
    (config.optim.pointer_layer, config.optim.pointer_objects) = (1, true);
    config.data.tasks = vec![Task::Count, Task::Attribute];
    let trainer = Trainer::new(config.clone(), false).unwrap();
    let end = trainer.model.tokenizer().token_id("<|vision_end|>").unwrap();
    let mut generator = crate::train::scenes::Generator::new(5, config.data.clone());
    let (mut tallied, mut plain) = (0, 0);
    for _ in 0..6 {
        let group = generator.group(4);
        let s = sample(trainer.model.as_ref(), &trainer.chat, &group).unwrap();
        let asked = group.iter().filter(|e| e.kind == Task::Count || matches!(e.answer.as_str(), "yes" | "no")).count();
        assert_eq!(s.pointers.iter().filter(|p| !p.tally.is_empty()).count(), asked);
        for p in &s.pointers {
            match p.tally.as_slice() {
                [] => plain += 1,
                [row] => {
                    assert_eq!(s.prepared.ids[*row as usize], end);
                    tallied += 1;
                }
                more => panic!("one tally token per answer: {more:?}"),
            }
        }
    }
    assert!(tallied > 0 && plain > 0, "{tallied} {plain}");
    config.optim.pointer_tally = true;
    let e = config.validate().unwrap_err();
    assert!(e.contains("optim.pointer_tally needs optim.inventory_layer"), "{e}");
    config.optim.inventory_layer = 1;
    config.validate().unwrap();
    let mut seen = vec![];
    Trainer::new(config, false).unwrap().run(&mut |p| seen.push(p.pointer)).unwrap();
    assert!(seen.iter().all(|p| p.is_some_and(f32::is_finite)), "{seen:?}");
    let _ = std::fs::remove_dir_all(&out);
}
