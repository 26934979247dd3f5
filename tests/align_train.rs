//! `georag::align::train` on a small SYNTHETIC clustered world: 12 places spread over the globe,
//! photos within ~60 km of their place, and "image embeddings" that are the place's random
//! vector plus noise (a frozen encoder that carries place information but knows no GPS). Checks:
//! training raises held-out image->GPS accuracy at 2500 km far above the untrained model's;
//! resuming from a checkpoint continues the same loss curve; a checkpoint of other settings is
//! refused; the trained model loads back with the same outputs.

mod common;

use georag::align::train::{self, TrainData, TrainOptions};
use georag::align::AlignSpec;
use georag::record::LatLon;
use georag::util::rng::Rng;

const PLACES: [(f64, f64); 12] = [
    (48.85, 2.35),
    (-33.87, 151.21),
    (40.71, -74.01),
    (-1.29, 36.82),
    (35.68, 139.65),
    (-22.91, -43.17),
    (55.75, 37.62),
    (19.43, -99.13),
    (28.61, 77.21),
    (-34.60, -58.38),
    (64.15, -21.94),
    (1.35, 103.82),
];

fn world(n: usize, dim: usize, seed: u64) -> TrainData {
    let mut rng = Rng::new(seed);
    let centres: Vec<Vec<f32>> = (0..PLACES.len()).map(|_| (0..dim).map(|_| rng.normal() as f32).collect()).collect();
    let (mut image, mut coords) = (Vec::with_capacity(n * dim), Vec::with_capacity(n));
    for _ in 0..n {
        let c = rng.below(PLACES.len());
        let (la, lo) = PLACES[c];
        coords.push(LatLon { lat: la + rng.range(-0.5, 0.5), lon: lo + rng.range(-0.5, 0.5) });
        let v: Vec<f32> = centres[c].iter().map(|x| x + 0.7 * rng.normal() as f32).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        image.extend(v.iter().map(|x| x / norm));
    }
    TrainData { image_dim: dim, image, coords, text: None, fingerprint: format!("synthetic-clusters/{n}/{dim}/{seed}") }
}

/// Small heads, a learning rate for a few hundred steps (G3's 3e-5 is for 4.7 M photos x 10
/// epochs), everything else G3's.
fn spec(kind: &str, epochs: usize, extra: &str) -> AlignSpec {
    let y = format!(
        "{{kind: {kind}, location: {{rff_features: 32, hidden: 64, out_dim: 32}}, heads: {{shared_dim: 32}}, \
         train: {{lr: 0.002, batch_size: 64, epochs: {epochs}, holdout: 200, seed: 3{extra}}}}}"
    );
    serde_yaml::from_str(&y).unwrap()
}

fn acc(e: &train::EvalLog, km: f64) -> f64 {
    e.accuracy.iter().find(|(t, _)| *t == km).unwrap().1
}

#[test]
fn training_raises_held_out_accuracy_at_2500_km() {
    let data = world(1400, 24, 1);
    let out = common::tmp("align-improves");
    let s = spec("g3", 14, "");
    let r = train::train(&s, &data, &TrainOptions { out: out.clone(), ..Default::default() }).unwrap();
    let steps = r.curve.steps.len();
    assert_eq!(steps, 14 * (1200 / 64 + 1), "1200 training rows in batches of 64, 14 epochs");
    assert!(steps >= 200);
    let (e0, last) = (&r.curve.evals[0], r.curve.evals.last().unwrap());
    assert_eq!((e0.epoch, last.epoch, e0.n), (0, 14, 200));
    let (a0, a1) = (acc(e0, 2500.0), acc(last, 2500.0));
    eprintln!("held-out image->GPS top-1 over the 200-coordinate held-out gallery, within 2500 km: untrained {a0:.3}, after {steps} steps {a1:.3}");
    assert!(a1 >= 0.8 && a1 >= a0 + 0.4, "untrained {a0}, trained {a1}");
    // The loss went down: mean of the last epoch's steps below the first epoch's.
    let per = steps / 14;
    let mean = |s: &[train::StepLog]| s.iter().map(|x| x.loss).sum::<f64>() / s.len() as f64;
    assert!(mean(&r.curve.steps[steps - per..]) < 0.7 * mean(&r.curve.steps[..per]));
    // The learning rate decays by 0.87 per epoch.
    assert!((r.curve.steps[steps - 1].lr - 0.002 * 0.87f64.powi(13)).abs() < 1e-15);
    // The saved model gives the same held-out accuracy when loaded back.
    let card = r.card.unwrap();
    let (m, card2) = train::load_model(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(card.model_fingerprint, card2.model_fingerprint);
    let (_, held) = train::split(data.len(), 200, 3);
    let e = train::evaluate(&m, &data, &held, &[2500.0], 64, 14).unwrap();
    assert_eq!(e.accuracy[0].1, a1);
    // A second call finds the finished checkpoint and trains nothing more.
    let again = train::train(&s, &data, &TrainOptions { out: out.clone(), ..Default::default() }).unwrap();
    assert_eq!(again.samples, 0);
    assert_eq!(again.curve, r.curve);
    std::fs::remove_dir_all(&out).unwrap();
}

fn resume_matches(kind: &str, extra: &str, stop_at: usize) {
    let data = world(500, 16, 2);
    let s = spec(kind, 3, extra);
    let a = common::tmp(&format!("align-straight-{kind}"));
    let straight = train::train(&s, &data, &TrainOptions { out: a.clone(), ..Default::default() }).unwrap();
    let b = common::tmp(&format!("align-resumed-{kind}"));
    let part = train::train(&s, &data, &TrainOptions { out: b.clone(), max_steps: Some(stop_at), ..Default::default() }).unwrap();
    assert!(part.interrupted && part.card.is_none());
    assert_eq!(part.curve.steps.len(), stop_at);
    let resumed = train::train(&s, &data, &TrainOptions { out: b.clone(), ..Default::default() }).unwrap();
    assert_eq!(resumed.resumed_from, Some(stop_at));
    assert_eq!(resumed.curve.steps.len(), straight.curve.steps.len());
    let mut worst = 0f64;
    for (x, y) in straight.curve.steps.iter().zip(&resumed.curve.steps) {
        assert_eq!((x.epoch, x.step, x.lr), (y.epoch, y.step, y.lr));
        worst = worst.max((x.loss - y.loss).abs() / x.loss.abs().max(1e-12));
    }
    eprintln!("{kind}: resumed at step {stop_at}; largest relative loss difference to the uninterrupted run: {worst:e}");
    assert!(worst <= 1e-6, "{worst}");
    assert_eq!(straight.curve.evals.len(), resumed.curve.evals.len());
    // A different setting refuses the checkpoint, naming the fingerprint.
    let other = spec(kind, 3, ", temperature_init: 0.05");
    let e = train::train(&other, &data, &TrainOptions { out: b.clone(), ..Default::default() }).err().expect("must refuse").to_string();
    assert!(e.contains("training fingerprint"), "{e}");
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

/// 300 training rows in batches of 64: 5 steps per epoch, 15 in all; stop mid-epoch 2 (after
/// step 7), with a mid-epoch checkpoint every 4 steps before it.
#[test]
fn resume_continues_the_same_loss_curve_g3() {
    resume_matches("g3", ", checkpoint_every_steps: 4", 7);
}

#[test]
fn resume_continues_the_same_loss_curve_transgeoclip() {
    resume_matches("transgeoclip", "}, transformer: {layers: 1, heads: 4, ffn: 64}, triplet: {exclude_km: 100", 9);
}

#[test]
fn data_order_and_split_are_seeded() {
    let (t1, h1) = train::split(1000, 100, 7);
    let (t2, h2) = train::split(1000, 100, 7);
    assert_eq!((&t1, &h1), (&t2, &h2));
    assert_eq!((t1.len(), h1.len()), (900, 100));
    assert!(h1.iter().all(|i| !t1.contains(i)));
    assert_ne!(train::split(1000, 100, 8).1, h1);
    let b1 = train::epoch_batches(&t1, 64, 7, 0);
    assert_eq!(b1, train::epoch_batches(&t1, 64, 7, 0));
    assert_ne!(b1, train::epoch_batches(&t1, 64, 7, 1));
    let mut all: Vec<usize> = b1.concat();
    all.sort_unstable();
    assert_eq!(all, t1, "every training row once per epoch");
}

/// `kind: aligned` (G3's retrieval vector): base ⊕ image->GPS head (no text heads here), unit
/// rows, the base part unchanged up to the 1/sqrt(2) of the concatenation, the head part equal
/// to the model's normalised image->GPS output; a base of the wrong width is refused.
#[test]
fn aligned_encoder_concatenates_normalised_parts() {
    use georag::embed::{Encoder, aligned::AlignedEncoder, im2gps::Im2gpsEncoder};
    let base = Im2gpsEncoder::new(Default::default()).unwrap();
    let bd = base.dim();
    let data = world(300, bd, 4);
    let out = common::tmp("align-encoder");
    let s = spec("g3", 1, "");
    train::train(&s, &data, &TrainOptions { out: out.clone(), ..Default::default() }).unwrap();
    let enc = AlignedEncoder::new(Box::new(Im2gpsEncoder::new(Default::default()).unwrap()), &out).unwrap();
    assert_eq!(enc.dim(), bd + 32);
    let rows = &data.image[..3 * bd];
    let v = enc.extend(rows).unwrap();
    assert_eq!(v.len(), 3 * (bd + 32));
    let (m, _) = train::load_model(&out, &candle_core::Device::Cpu).unwrap();
    let heads = train::image_vectors(&m, rows, 8).unwrap();
    let k = 2f32.sqrt();
    for i in 0..3 {
        let r = &v[i * (bd + 32)..(i + 1) * (bd + 32)];
        let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row {i} norm {norm}");
        for (a, b) in r[..bd].iter().zip(&rows[i * bd..(i + 1) * bd]) {
            assert!((a * k - b).abs() < 1e-6);
        }
        for (a, b) in r[bd..].iter().zip(&heads[i * 32..(i + 1) * 32]) {
            assert!((a * k - b).abs() < 1e-6);
        }
    }
    assert_ne!(enc.fingerprint(), base.fingerprint());
    // A model trained on 24-d embeddings cannot extend the 1024-d descriptor.
    let small = common::tmp("align-encoder-small");
    train::train(&s, &world(300, 24, 4), &TrainOptions { out: small.clone(), ..Default::default() }).unwrap();
    let e = AlignedEncoder::new(Box::new(Im2gpsEncoder::new(Default::default()).unwrap()), &small).err().expect("must refuse").to_string();
    assert!(e.contains("24-d") && e.contains(&format!("{bd}-d")), "{e}");
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_dir_all(&small).unwrap();
}
