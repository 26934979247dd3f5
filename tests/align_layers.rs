//! Geo-alignment (`georag::align`): gradients of every new layer against central finite
//! differences (f64, tiny shapes), permutation equivariance of the location attention, and the
//! GeoCLIP-initialised location tower (Equal Earth path) against the geoclip package's outputs
//! (REAL weights from the geoclip wheel; skips with a printed reason without it).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use georag::align::layers::{LayerNorm, Linear, LocationAttention, LocationTower, Mlp, Params, TransformerLayer};
use georag::align::{AlignModel, AlignSpec, LocationSpec, Projection, TransformerSpec, loss};
use georag::record::LatLon;
use georag::util::rng::Rng;

const F64: DType = DType::F64;

fn randn(rng: &mut Rng, shape: &[usize], scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| scale * rng.normal()).collect::<Vec<f64>>(), shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn coords(rng: &mut Rng, n: usize) -> Vec<LatLon> {
    (0..n).map(|_| LatLon { lat: rng.range(-70.0, 70.0), lon: rng.range(-180.0, 180.0) }).collect()
}

/// Compares candle's gradients of `f()` (a scalar) with respect to every var in `vars` with
/// central differences on up to `per_var` entries each; returns the number of entries checked.
fn grad_check(vars: &[(String, Var)], per_var: usize, f: &dyn Fn() -> Tensor) -> usize {
    let loss = f();
    let grads = loss.backward().unwrap();
    let mut rng = Rng::new(99);
    let mut checked = 0;
    for (name, var) in vars {
        let g = grads.get(var).unwrap_or_else(|| panic!("{name}: no gradient"));
        let g = flat(g);
        let orig = var.as_tensor().copy().unwrap();
        let base = flat(&orig);
        let picks: Vec<usize> = if base.len() <= per_var { (0..base.len()).collect() } else { (0..per_var).map(|_| rng.below(base.len())).collect() };
        for i in picks {
            let eps = 1e-6;
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                var.set(&Tensor::from_vec(v, orig.shape(), &Device::Cpu).unwrap()).unwrap();
                f().to_scalar::<f64>().unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            var.set(&orig).unwrap();
            let tol = 1e-6 + 1e-5 * fd.abs().max(g[i].abs());
            assert!((fd - g[i]).abs() <= tol, "{name}[{i}]: autograd {} vs finite difference {fd}", g[i]);
            checked += 1;
        }
    }
    checked
}

fn weighted_sum(out: &Tensor, r: &Tensor) -> Tensor {
    (out * r).unwrap().sum_all().unwrap()
}

fn with_input(p: &Params, x: &Var) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = p.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.push(("input".into(), x.clone()));
    v
}

#[test]
fn mlp_head_and_layer_norm_gradients() {
    let mut rng = Rng::new(1);
    let mut p = Params::new(F64, &Device::Cpu);
    let mlp = Mlp::new(&mut p, "head", [5, 7, 3], &mut rng).unwrap();
    let ln = LayerNorm::new(&mut p, "ln", 3).unwrap();
    // Non-trivial LN affine parameters.
    p.set("ln.weight", &randn(&mut rng, &[3], 1.0)).unwrap();
    p.set("ln.bias", &randn(&mut rng, &[3], 1.0)).unwrap();
    let x = Var::from_tensor(&randn(&mut rng, &[4, 5], 1.0)).unwrap();
    let r = randn(&mut rng, &[4, 3], 1.0);
    let n = grad_check(&with_input(&p, &x), 6, &|| weighted_sum(&ln.forward(&mlp.forward(x.as_tensor()).unwrap()).unwrap(), &r));
    assert!(n >= 30, "{n}");
}

/// The fused CPU linear node (`align::fused`) against the tensor-operation path it replaces:
/// outputs and the gradients of input, weight and bias agree, with and without the ReLU, in f32
/// and f64, for a contiguous input, a transposed one and one at an offset (a row slice).
#[test]
fn fused_linear_matches_the_tensor_operation_path() {
    check_fused(19, 37, 29, 1);
}

/// The same with every product split into parts (one `gemm` call per rayon thread): three
/// threads, so that the parts are uneven (203 output columns, 131 input columns, 203 weight
/// rows) whatever this machine's core count.
#[test]
fn fused_linear_split_over_threads_matches_the_tensor_operation_path() {
    check_fused(70, 131, 203, 3);
}

/// `n` rows of `fan_in` inputs (`fan_in >= n`, for the transposed input) into `fan_out`
/// outputs, inside a rayon pool of `threads`.
fn check_fused(n: usize, fan_in: usize, fan_out: usize, threads: usize) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        for dtype in [DType::F32, F64] {
            let tol = if dtype == F64 { 1e-12 } else { 2e-5 };
            let mut rng = Rng::new(7);
            let mut p = Params::new(dtype, &Device::Cpu);
            let lin: Linear = p.linear("l", fan_in, fan_out, &mut rng).unwrap();
            let r = randn(&mut rng, &[n, fan_out], 1.0).to_dtype(dtype).unwrap();
            let base = Var::from_tensor(&randn(&mut rng, &[fan_in.max(n + 11) + 3, fan_in], 1.0).to_dtype(dtype).unwrap()).unwrap();
            let inputs: [(&str, Box<dyn Fn() -> Tensor>); 3] = [
                ("contiguous", Box::new(|| base.as_tensor().narrow(0, 0, n).unwrap().contiguous().unwrap())),
                ("transposed", Box::new(|| base.as_tensor().narrow(0, 0, fan_in).unwrap().narrow(1, 0, n).unwrap().t().unwrap())),
                ("offset", Box::new(|| base.as_tensor().narrow(0, 11, n).unwrap())),
            ];
            for (what, x) in &inputs {
                for relu in [false, true] {
                    let fused = if relu { lin.forward_relu(&x()).unwrap() } else { lin.forward(&x()).unwrap() };
                    let plain = lin.unfused(&x(), relu).unwrap();
                    let gf = (&fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    let gp = (&plain * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    let close = |name: &str, a: &Tensor, b: &Tensor| {
                        let (a, b) = (flat(&a.to_dtype(F64).unwrap()), flat(&b.to_dtype(F64).unwrap()));
                        assert_eq!(a.len(), b.len(), "{dtype:?} {what} relu={relu} {name}: sizes");
                        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f64::max);
                        assert!(worst <= tol, "{dtype:?} {what} relu={relu} {name} ({n}x{fan_in} -> {fan_out}, {threads} threads): fused and tensor-op paths differ by {worst:e} (relative)");
                    };
                    close("output", &fused, &plain);
                    if relu {
                        assert!(flat(&fused.to_dtype(F64).unwrap()).iter().any(|v| *v == 0.0), "the ReLU clipped nothing");
                    }
                    close("input gradient", gf.get(base.as_tensor()).unwrap(), gp.get(base.as_tensor()).unwrap());
                    close("weight gradient", gf.get(&lin.w).unwrap(), gp.get(&lin.w).unwrap());
                    close("bias gradient", gf.get(&lin.b).unwrap(), gp.get(&lin.b).unwrap());
                }
            }
        }
    });
}

/// The CPU layers do run as the fused node, told apart from the tensor-operation path by what
/// only it does: a pre-activation of exactly 0 passes no gradient through the ReLU (PyTorch's
/// convention; candle's `relu` passes it), and an input that carries no gradient gets none
/// (candle's matmul stores one for it).
#[test]
fn cpu_linear_layers_take_the_fused_node() {
    let mut rng = Rng::new(8);
    let mut p = Params::new(F64, &Device::Cpu);
    let lin: Linear = p.linear("l", 5, 3, &mut rng).unwrap();
    p.set("l.bias", &Tensor::zeros(3, F64, &Device::Cpu).unwrap()).unwrap();
    // Row 0 is all zeros, so its pre-activations are exactly 0.
    let mut rows = vec![0.0; 5];
    rows.extend(flat(&randn(&mut rng, &[3, 5], 1.0)));
    let x = Tensor::from_vec(rows, (4, 5), &Device::Cpu).unwrap();
    let r = Tensor::ones((4, 3), F64, &Device::Cpu).unwrap();
    let fused = (lin.forward_relu(&x).unwrap() * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let plain = (lin.unfused(&x, true).unwrap() * &r).unwrap().sum_all().unwrap().backward().unwrap();
    // d loss / d b_j sums the row gradients that pass the ReLU; row 0's passes only in candle's.
    let (bf, bp) = (flat(fused.get(&lin.b).unwrap()), flat(plain.get(&lin.b).unwrap()));
    for j in 0..3 {
        assert!((bp[j] - bf[j] - 1.0).abs() < 1e-12, "bias {j}: tensor-op path {} vs fused {}: row 0 should pass only the former", bp[j], bf[j]);
    }
    assert!(fused.get(&x).is_none(), "the fused node stored a gradient for an input that carries none");
    assert!(plain.get(&x).is_some(), "candle's matmul no longer stores a gradient for untracked inputs: the check above tells nothing");
}

fn tiny_location(sigmas: Vec<f64>) -> LocationSpec {
    LocationSpec { projection: Projection::Mercator, sigmas, rff_features: 4, hidden: 8, out_dim: 6, geoclip_init: None }
}

#[test]
fn location_tower_gradients_mercator_capsules() {
    let mut rng = Rng::new(2);
    let mut p = Params::new(F64, &Device::Cpu);
    let tower = LocationTower::new(&mut p, &tiny_location(vec![1.0, 16.0, 256.0]), None, &mut rng).unwrap();
    let c = coords(&mut rng, 5);
    let r = randn(&mut rng, &[5, 6], 1.0);
    let vars: Vec<(String, Var)> = p.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // 3 capsules x 4 linear layers x (weight + bias).
    assert_eq!(vars.len(), 24);
    let n = grad_check(&vars, 4, &|| weighted_sum(&tower.forward(&c, F64, &Device::Cpu).unwrap(), &r));
    assert!(n >= 80, "{n}");
    // The RFF matrices are buffers, not trained.
    assert_eq!(p.buffers.len(), 3);
}

#[test]
fn location_attention_and_transformer_layer_gradients() {
    let mut rng = Rng::new(3);
    let mut p = Params::new(F64, &Device::Cpu);
    let att = LocationAttention::new(&mut p, "att", 8, 2, &mut rng).unwrap();
    p.set("att.log_slope", &randn(&mut rng, &[2, 1, 1], 0.5)).unwrap();
    let x = Var::from_tensor(&randn(&mut rng, &[5, 8], 1.0)).unwrap();
    let dist = randn(&mut rng, &[5, 5], 1.0).abs().unwrap();
    let r = randn(&mut rng, &[5, 8], 1.0);
    let n = grad_check(&with_input(&p, &x), 5, &|| weighted_sum(&att.forward(x.as_tensor(), &dist).unwrap(), &r));
    assert!(n >= 40, "{n}");

    let mut p = Params::new(F64, &Device::Cpu);
    let spec = TransformerSpec { layers: 1, heads: 2, ffn: 6, distance_scale_km: 1000.0 };
    let layer = TransformerLayer::new(&mut p, "t", 8, &spec, &mut rng).unwrap();
    let n = grad_check(&with_input(&p, &x), 4, &|| weighted_sum(&layer.forward(x.as_tensor(), &dist).unwrap(), &r));
    assert!(n >= 60, "{n}");
}

#[test]
fn contrastive_and_triplet_loss_gradients() {
    let mut rng = Rng::new(4);
    let a = Var::from_tensor(&randn(&mut rng, &[6, 4], 1.0)).unwrap();
    let b = Var::from_tensor(&randn(&mut rng, &[6, 4], 1.0)).unwrap();
    let s = Var::from_tensor(&Tensor::new(2.0f64, &Device::Cpu).unwrap()).unwrap();
    let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone()), ("log_scale".to_string(), s.clone())];
    let n = grad_check(&vars, 24, &|| loss::clip_loss(a.as_tensor(), b.as_tensor(), s.as_tensor()).unwrap());
    assert_eq!(n, 49);
    // Matching pairs score a lower loss than shuffled ones.
    let l_match = loss::clip_loss(a.as_tensor(), a.as_tensor(), s.as_tensor()).unwrap().to_scalar::<f64>().unwrap();
    let l_rand = loss::clip_loss(a.as_tensor(), b.as_tensor(), s.as_tensor()).unwrap().to_scalar::<f64>().unwrap();
    assert!(l_match < l_rand, "{l_match} vs {l_rand}");
    // Triplet: margin large enough that every anchor is active (random ties are measure-zero).
    let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
    let n = grad_check(&vars, 24, &|| loss::triplet_hardest(a.as_tensor(), b.as_tensor(), 3.0, None).unwrap());
    assert_eq!(n, 48);
    // With every other item excluded, no anchor has a negative: the loss is 0.
    let all = Tensor::ones((6, 6), F64, &Device::Cpu).unwrap();
    assert_eq!(loss::triplet_hardest(a.as_tensor(), b.as_tensor(), 0.5, Some(&all)).unwrap().to_scalar::<f64>().unwrap(), 0.0);
    // Hand-computed: anchors equal to their positives and orthogonal to the rest: loss = margin - 1 + 0 clipped.
    let e = Tensor::eye(3, F64, &Device::Cpu).unwrap();
    // (The 1e-12 in the normalisation moves s_ii by ~1e-12.)
    assert!((loss::triplet_hardest(&e, &e, 0.5, None).unwrap().to_scalar::<f64>().unwrap()).abs() < 1e-9);
    assert!((loss::triplet_hardest(&e, &e, 1.5, None).unwrap().to_scalar::<f64>().unwrap() - 0.5).abs() < 1e-9);
}

fn tiny_transgeoclip(text: bool) -> AlignSpec {
    let y = format!(
        "{{kind: transgeoclip, location: {{sigmas: [1, 16], rff_features: 4, hidden: 8, out_dim: 6}}, heads: {{shared_dim: 5, hidden: 7}}, \
         transformer: {{layers: 1, heads: 2, ffn: 6, distance_scale_km: 2000}}, triplet: {{margin: 2.0, weight: 0.5}}, train: {{seed: 5}}{}}}",
        if text { ", text: unused" } else { "" }
    );
    serde_yaml::from_str(&y).unwrap()
}

/// The whole TransGeoCLIP loss (image-GPS, image-text, text-GPS contrastive + triplet) through
/// every parameter of the model.
#[test]
fn full_transgeoclip_loss_gradients() {
    let mut rng = Rng::new(6);
    let m = AlignModel::new(&tiny_transgeoclip(true), 4, Some(3), F64, &Device::Cpu).unwrap();
    let img = randn(&mut rng, &[5, 4], 1.0);
    let txt = randn(&mut rng, &[5, 3], 1.0);
    let c = coords(&mut rng, 5);
    let l = m.loss(&img, &c, Some(&txt)).unwrap();
    let names: Vec<&str> = l.parts.iter().map(|p| p.0).collect();
    assert_eq!(names, ["image_gps", "image_text", "text_gps", "triplet"]);
    let vars: Vec<(String, Var)> = m.params.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let n = grad_check(&vars, 2, &|| m.loss(&img, &c, Some(&txt)).unwrap().total);
    assert!(n >= 2 * vars.len() - 10, "{n} of {} vars", vars.len());
}

/// Location attention over the batch: permuting the batch permutes the outputs (and nothing
/// else), while each point's output does depend on the other points.
#[test]
fn location_attention_is_permutation_equivariant_over_the_batch() {
    let mut rng = Rng::new(7);
    let mut p = Params::new(F64, &Device::Cpu);
    let spec = TransformerSpec { layers: 2, heads: 2, ffn: 6, distance_scale_km: 3000.0 };
    let tower = LocationTower::new(&mut p, &tiny_location(vec![1.0, 16.0]), Some(&spec), &mut rng).unwrap();
    let c = coords(&mut rng, 7);
    let perm = [3usize, 0, 6, 1, 5, 2, 4];
    let pc: Vec<LatLon> = perm.iter().map(|&i| c[i]).collect();
    let out = tower.forward(&c, F64, &Device::Cpu).unwrap().to_vec2::<f64>().unwrap();
    let pout = tower.forward(&pc, F64, &Device::Cpu).unwrap().to_vec2::<f64>().unwrap();
    for (k, &i) in perm.iter().enumerate() {
        for (a, b) in pout[k].iter().zip(&out[i]) {
            assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "row {k} (was {i}): {a} vs {b}");
        }
    }
    // Not trivially equivariant: moving point 6 changes point 0's output.
    let mut moved = c.clone();
    moved[6] = LatLon { lat: c[0].lat + 0.5, lon: c[0].lon + 0.5 };
    let mout = tower.forward(&moved, F64, &Device::Cpu).unwrap().to_vec2::<f64>().unwrap();
    let diff: f64 = mout[0].iter().zip(&out[0]).map(|(a, b)| (a - b).abs()).sum();
    assert!(diff > 1e-6, "point 0 ignores the rest of the batch ({diff})");
}

#[test]
fn mercator_projection_reference_points() {
    use georag::align::layers::{MERCATOR_MAX_LAT, mercator};
    let [x0, y0] = mercator(0.0, 0.0);
    assert!(x0 == 0.0 && y0.abs() < 1e-15, "{x0} {y0}");
    let [x, y] = mercator(MERCATOR_MAX_LAT, 180.0);
    assert!((x - 1.0).abs() < 1e-15 && (y - 1.0).abs() < 1e-12, "{x} {y}");
    // pyproj EPSG:4326 -> EPSG:3857 of (48.8566, 2.3522): (261845.7, 6250564.3) m.
    let [x, y] = mercator(48.8566, 2.3522);
    assert!((x * 20037508.3427892 - 261845.7).abs() < 1.0 && (y * 20037508.3427892 - 6250564.3).abs() < 1.0, "{x} {y}");
    // Poles are clamped to the Web Mercator limit, never infinite.
    assert_eq!(mercator(90.0, 0.0), mercator(MERCATOR_MAX_LAT, 0.0));
    assert!(mercator(-90.0, 0.0)[1].is_finite());
}

/// GeoCLIP-initialised tower on the Equal Earth path: GeoCLIP's raw 512-d features of 260
/// coordinates, as the geoclip package computes them (the fixture `embed::geoclip`'s parity test
/// uses). On the Mercator path (G3) the same weights see other inputs and give other features.
#[test]
fn geoclip_initialised_tower_matches_geoclip_before_training() {
    let Some(dir) = common::geoclip_dir() else { return };
    let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders/geoclip-location.safetensors");
    let r = candle_core::safetensors::load(fx, &Device::Cpu).unwrap();
    let c: Vec<LatLon> = r["coords"].to_vec2::<f32>().unwrap().iter().map(|v| LatLon { lat: v[0] as f64, lon: v[1] as f64 }).collect();
    let want = r["features"].to_vec2::<f32>().unwrap();
    let mut worst = 1f64;
    for projection in [Projection::EqualEarth, Projection::Mercator] {
        let spec = LocationSpec { projection, geoclip_init: Some(dir.clone()), ..Default::default() };
        let mut p = Params::new(DType::F32, &Device::Cpu);
        let tower = LocationTower::new(&mut p, &spec, None, &mut Rng::new(0)).unwrap();
        let got = tower.forward(&c, DType::F32, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let cos = |a: &[f32], b: &[f32]| {
            let d: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64) * (*y as f64)).sum();
            let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            d / (n(a) * n(b))
        };
        let cs: Vec<f64> = got.iter().zip(&want).map(|(g, w)| cos(g, w)).collect();
        let min = cs.iter().cloned().fold(1.0, f64::min);
        match projection {
            Projection::EqualEarth => {
                worst = min;
                for (g, w) in got.iter().zip(&want) {
                    let (ng, nw) = (g.iter().map(|x| x * x).sum::<f32>().sqrt(), w.iter().map(|x| x * x).sum::<f32>().sqrt());
                    assert!((ng - nw).abs() / nw < 1e-3, "norm {ng} vs {nw}");
                }
            }
            // Same weights, Mercator inputs: a different (distorted) map of the world.
            Projection::Mercator => assert!(min < 0.99, "Mercator path should differ from GeoCLIP's, min cosine {min}"),
        }
    }
    assert!(worst >= 0.9999, "worst cosine {worst}");
}
