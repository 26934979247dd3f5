//! Training throughput of the G3 alignment heads: `cargo bench --bench align_throughput
//! [-- STEPS [BATCH [DEVICE]]]` (DEVICE `cpu`, the default, or `cuda:N` in a `cuda` build).
//!
//! G3's shapes: 768-d image embeddings (CLIP ViT-L/14 projection), the RFF location tower
//! (3 capsules, 256 Fourier features, 512 -> 1024 -> 1024 -> 1024 -> 512), heads into a 768-d
//! shared space, image-GPS contrastive loss; batch 256, f32. Random inputs (throughput does not
//! depend on the values). Times forward + backward + AdamW step of `STEPS` steps after 2 warm-up
//! steps, and projects one MP-16 epoch (4.72 M photos) from the rate.

use candle_core::{DType, Tensor};
use georag::align::optim::{AdamW, ParamsAdamW};
use georag::align::{AlignModel, AlignSpec};
use georag::record::LatLon;
use georag::util::rng::Rng;
use std::time::Instant;

const MP16: f64 = 4_723_695.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let steps: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let device_name = args.get(2).cloned().unwrap_or_else(|| "cpu".into());
    let device = georag::embed::hf::device(&device_name).unwrap_or_else(|e| panic!("{e}"));
    // What `align::train` does before its first step.
    georag::util::alloc::serve_large_from_heap();
    for kind in ["g3"] {
        let spec: AlignSpec = serde_yaml::from_str(&format!("{{kind: {kind}}}")).unwrap();
        let model = AlignModel::new(&spec, 768, None, DType::F32, &device).unwrap();
        let vars = model.params.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut opt = AdamW::new(vars, ParamsAdamW { lr: 3e-5, weight_decay: 1e-6, ..Default::default() }).unwrap();
        let mut rng = Rng::new(0);
        let mut batch_data = || {
            let img: Vec<f32> = (0..batch * 768).map(|_| rng.normal() as f32).collect();
            let coords: Vec<LatLon> = (0..batch).map(|_| LatLon { lat: rng.range(-60.0, 70.0), lon: rng.range(-180.0, 180.0) }).collect();
            (Tensor::from_vec(img, (batch, 768), &device).unwrap(), coords)
        };
        // Seconds in the forward pass, the backward pass and the optimizer update.
        let mut phases = [0f64; 3];
        let mut step = |img: &Tensor, coords: &[LatLon], phases: &mut [f64; 3]| {
            let t = Instant::now();
            let l = model.loss(img, coords, None).unwrap();
            device.synchronize().unwrap();
            let t1 = Instant::now();
            let g = l.total.backward().unwrap();
            device.synchronize().unwrap();
            let t2 = Instant::now();
            opt.step(&g).unwrap();
            device.synchronize().unwrap();
            phases[0] += (t1 - t).as_secs_f64();
            phases[1] += (t2 - t1).as_secs_f64();
            phases[2] += t2.elapsed().as_secs_f64();
        };
        for _ in 0..2 {
            let (i, c) = batch_data();
            step(&i, &c, &mut [0f64; 3]);
        }
        let data: Vec<_> = (0..steps).map(|_| batch_data()).collect();
        let t = Instant::now();
        for (i, c) in &data {
            step(i, c, &mut phases);
        }
        let secs = t.elapsed().as_secs_f64();
        let rate = (steps * batch) as f64 / secs;
        let per = |x: f64| x / steps as f64;
        println!(
            "{kind}: {} trainable parameters; {steps} steps of batch {batch} in {secs:.2} s = {rate:.1} samples/s ({:.3} s/step: forward {:.3}, backward {:.3}, AdamW {:.3}); one MP-16 epoch ({MP16} photos) projected {:.1} h on {device_name} ({} CPU threads)",
            model.params.n_trainable(),
            per(secs),
            per(phases[0]),
            per(phases[1]),
            per(phases[2]),
            MP16 / rate / 3600.0,
            rayon::current_num_threads()
        );
    }
}
