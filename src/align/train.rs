//! `georag align train`: training loop, held-out evaluation, checkpoints and resume.

use super::model::AlignModel;
use super::optim::{AdamW, ParamsAdamW};
use super::{AlignError, AlignSpec};
use crate::metrics::{EARTH_RADIUS_KM, haversine_km};
use crate::record::LatLon;
use crate::util::atomic;
use crate::util::fingerprint::{Fingerprint, sha256_hex};
use crate::util::progress::Progress;
use crate::util::rng::Rng;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const STATE_SCHEMA: &str = "georag.align.state/v1";
pub const MODEL_SCHEMA: &str = "georag.align.model/v1";

/// The training set: frozen image (and text) embeddings with their GPS, one row per photo.
pub struct TrainData {
    pub image_dim: usize,
    /// `n * image_dim`.
    pub image: Vec<f32>,
    pub coords: Vec<LatLon>,
    /// `(n * text_dim, text_dim)`.
    pub text: Option<(Vec<f32>, usize)>,
    /// Fingerprint of where the rows came from (embedding stores: encoder + dataset).
    pub fingerprint: String,
}

impl TrainData {
    pub fn len(&self) -> usize {
        self.coords.len()
    }
    pub fn is_empty(&self) -> bool {
        self.coords.is_empty()
    }
    fn rows(&self, idx: &[usize], dtype: DType, device: &Device) -> candle_core::Result<(Tensor, Vec<LatLon>, Option<Tensor>)> {
        let d = self.image_dim;
        let mut v = Vec::with_capacity(idx.len() * d);
        for &i in idx {
            v.extend_from_slice(&self.image[i * d..(i + 1) * d]);
        }
        let img = Tensor::from_vec(v, (idx.len(), d), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?;
        let coords = idx.iter().map(|&i| self.coords[i]).collect();
        let text = match &self.text {
            Some((t, td)) => {
                let mut v = Vec::with_capacity(idx.len() * td);
                for &i in idx {
                    v.extend_from_slice(&t[i * td..(i + 1) * td]);
                }
                Some(Tensor::from_vec(v, (idx.len(), *td), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)
            }
            None => None,
        };
        Ok((img, coords, text))
    }
}

/// Where to write and when to stop early.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    pub out: PathBuf,
    /// Stop (after checkpointing) once this many optimizer steps have run in total: a
    /// controlled interruption, for tests and for splitting a long run.
    pub max_steps: Option<usize>,
    pub dtype: Option<DType>,
}

/// One optimizer step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepLog {
    pub epoch: usize,
    pub step: usize,
    pub lr: f64,
    pub loss: f64,
    pub parts: Vec<(String, f64)>,
}

/// Held-out image->GPS retrieval after `epoch` epochs (0: untrained).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EvalLog {
    pub epoch: usize,
    /// Held-out images scored (each against the gallery of all held-out coordinates).
    pub n: usize,
    /// `(threshold km, accuracy in [0, 1])`: share of held-out images whose most similar gallery
    /// coordinate lies strictly closer than the threshold (haversine, R = 6371 km).
    pub accuracy: Vec<(f64, f64)>,
}

/// The loss curve and the evaluations so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Curve {
    pub steps: Vec<StepLog>,
    pub evals: Vec<EvalLog>,
}

/// `state.json` of a checkpoint directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    schema: String,
    training_fingerprint: String,
    /// Next position: epoch and batch within it.
    epoch: usize,
    step_in_epoch: usize,
    global_step: usize,
    adam_t: usize,
    /// The safetensors file (parameters `p.*`, buffers `b.*`, AdamW moments `m.*`, `v.*`).
    file: String,
    sha256: String,
    curve: Curve,
}

/// `model.json`: the trained model, written last.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelCard {
    pub schema: String,
    pub kind: String,
    pub spec: AlignSpec,
    pub image_dim: usize,
    pub text_dim: Option<usize>,
    pub training_fingerprint: String,
    /// Digest of the spec and of `model.safetensors`' bytes: what a run that uses the model
    /// records.
    pub model_fingerprint: String,
    pub sha256: String,
    pub n_train: usize,
    pub n_holdout: usize,
    pub n_trainable: usize,
    pub curve: Curve,
}

/// What `train` did.
pub struct TrainReport {
    pub curve: Curve,
    /// The global step training resumed from, when a checkpoint was found.
    pub resumed_from: Option<usize>,
    /// Whether the run stopped at `max_steps` before finishing its epochs.
    pub interrupted: bool,
    pub card: Option<ModelCard>,
    pub n_train: usize,
    pub n_holdout: usize,
    pub out: PathBuf,
    /// Seconds spent in forward + backward + optimizer steps, and samples through them.
    pub step_seconds: f64,
    pub samples: usize,
}

/// The fingerprint a checkpoint must match to be resumed: the data and every setting but the
/// number of epochs (a finished run may be continued for more).
pub fn training_fingerprint(spec: &AlignSpec, data: &TrainData) -> String {
    let mut s = spec.clone();
    s.train_mut().epochs = 0;
    Fingerprint::new("align-train/1").field(&data.fingerprint).json(&s).field(data.image_dim.to_le_bytes()).field(data.text.as_ref().map_or(0, |t| t.1).to_le_bytes()).finish()
}

/// The seeded held-out split: `(train rows, held-out rows)`.
pub fn split(n: usize, holdout: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    shuffle(&mut idx, &mut Rng::derive(seed, 0x40_1D0F));
    let h = holdout.min(n / 2);
    let mut held = idx[..h].to_vec();
    let mut train = idx[h..].to_vec();
    held.sort_unstable();
    train.sort_unstable();
    (train, held)
}

fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

/// Epoch `e`'s batches of training rows: a seeded permutation cut into `batch_size` pieces; a
/// last piece of fewer than 2 rows is dropped (a contrastive loss needs a negative).
pub fn epoch_batches(train: &[usize], batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut order = train.to_vec();
    shuffle(&mut order, &mut Rng::derive(seed, 0xE90C_0000 + epoch as u64));
    order.chunks(batch_size).filter(|c| c.len() >= 2).map(|c| c.to_vec()).collect()
}

fn candle(context: &str) -> impl Fn(candle_core::Error) -> AlignError + '_ {
    move |source| AlignError::Candle { context: context.to_string(), source: Box::new(source) }
}

/// Row-normalised `(n, d)` tensor as f32 rows.
fn normalized(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    crate::embed::hf::normalized_rows(t)
}

/// GPS embeddings of `coords`, L2-normalised, in calls of `chunk` points (for TransGeoCLIP the
/// location attention sees the points of one call).
pub fn gps_vectors(model: &AlignModel, coords: &[LatLon], chunk: usize) -> candle_core::Result<Vec<f32>> {
    let mut out = vec![];
    for c in coords.chunks(chunk.max(1)) {
        out.extend(normalized(&model.gps_embed(c)?)?);
    }
    Ok(out)
}

/// Image embeddings through the image->GPS head, L2-normalised.
pub fn image_vectors(model: &AlignModel, image: &[f32], chunk: usize) -> candle_core::Result<Vec<f32>> {
    let d = model.image_dim;
    let mut out = vec![];
    for c in image.chunks(chunk.max(1) * d) {
        let t = Tensor::from_vec(c.to_vec(), (c.len() / d, d), &Device::Cpu)?.to_dtype(model.dtype())?.to_device(model.device())?;
        out.extend(normalized(&model.image_to_gps(&t)?)?);
    }
    Ok(out)
}

/// Index of the row of `gallery` (`m * d`) with the largest dot product with `q` (first on ties).
pub fn argmax_dot(q: &[f32], gallery: &[f32], d: usize) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (j, g) in gallery.chunks(d).enumerate() {
        let s: f32 = q.iter().zip(g).map(|(a, b)| a * b).sum();
        if s > best.1 {
            best = (j, s);
        }
    }
    best.0
}

/// Held-out image->GPS retrieval: every held-out image against the gallery of all held-out
/// coordinates (its own among them).
pub fn evaluate(model: &AlignModel, data: &TrainData, held: &[usize], thresholds: &[f64], chunk: usize, epoch: usize) -> candle_core::Result<EvalLog> {
    use rayon::prelude::*;
    let coords: Vec<LatLon> = held.iter().map(|&i| data.coords[i]).collect();
    let g = gps_vectors(model, &coords, chunk)?;
    let d = model.spec.heads().shared_dim;
    let mut img = Vec::with_capacity(held.len() * data.image_dim);
    for &i in held {
        img.extend_from_slice(&data.image[i * data.image_dim..(i + 1) * data.image_dim]);
    }
    let q = image_vectors(model, &img, chunk)?;
    let errors: Vec<f64> = q.par_chunks(d).zip(coords.par_iter()).map(|(qi, &truth)| haversine_km(coords[argmax_dot(qi, &g, d)], truth, EARTH_RADIUS_KM)).collect();
    let n = errors.len();
    let accuracy = thresholds.iter().map(|&t| (t, errors.iter().filter(|&&e| e < t).count() as f64 / n.max(1) as f64)).collect();
    Ok(EvalLog { epoch, n, accuracy })
}

fn ckpt_path(out: &Path, global_step: usize) -> PathBuf {
    out.join(format!("ckpt-{global_step:08}.safetensors"))
}

fn save_tensors(path: &Path, tensors: HashMap<String, Tensor>) -> Result<String, AlignError> {
    let tmp = atomic::temp_for(path)?;
    candle_core::safetensors::save(&tensors, &tmp).map_err(candle("writing a checkpoint"))?;
    atomic::commit(&tmp, path)?;
    let bytes = std::fs::read(path).map_err(|e| AlignError::Checkpoint { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(sha256_hex(&bytes))
}

fn write_checkpoint(out: &Path, model: &AlignModel, opt: &AdamW, st: &State) -> Result<(), AlignError> {
    let mut t: HashMap<String, Tensor> = HashMap::new();
    for (n, v) in &model.params.vars {
        t.insert(format!("p.{n}"), v.as_tensor().clone());
    }
    for (n, v) in &model.params.buffers {
        t.insert(format!("b.{n}"), v.as_tensor().clone());
    }
    t.extend(opt.state());
    let path = ckpt_path(out, st.global_step);
    let sha256 = save_tensors(&path, t)?;
    let st = State { file: path.file_name().expect("file name").to_string_lossy().into_owned(), sha256, ..st.clone() };
    atomic::write_json(&out.join("state.json"), &st)?;
    // Older checkpoints are no longer referenced.
    if let Ok(rd) = std::fs::read_dir(out) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("ckpt-") && name.ends_with(".safetensors") && name != st.file {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

fn load_checkpoint(out: &Path, model: &AlignModel, opt: &mut AdamW, fp: &str) -> Result<Option<State>, AlignError> {
    let sp = out.join("state.json");
    if !sp.exists() {
        return Ok(None);
    }
    let bad = |message: String| AlignError::Checkpoint { path: sp.clone(), message };
    let st: State = serde_json::from_slice(&std::fs::read(&sp).map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    if st.schema != STATE_SCHEMA {
        return Err(bad(format!("schema {} (expected {STATE_SCHEMA})", st.schema)));
    }
    if st.training_fingerprint != fp {
        return Err(bad(format!(
            "this checkpoint was trained with other data or settings (training fingerprint {}, this run's {fp}); use another output directory or delete it",
            st.training_fingerprint
        )));
    }
    let path = out.join(&st.file);
    let bytes = std::fs::read(&path).map_err(|e| AlignError::Checkpoint { path: path.clone(), message: e.to_string() })?;
    if sha256_hex(&bytes) != st.sha256 {
        return Err(AlignError::Checkpoint { path, message: "sha256 differs from the one state.json records".into() });
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, model.device()).map_err(candle("reading a checkpoint"))?;
    let err = |message: String| AlignError::Checkpoint { path: path.clone(), message };
    for (prefix, map) in [("p", &model.params.vars), ("b", &model.params.buffers)] {
        for n in map.keys() {
            let t = tensors.get(&format!("{prefix}.{n}")).ok_or_else(|| err(format!("tensor {prefix}.{n} missing")))?;
            model.params.set(n, t).map_err(err)?;
        }
    }
    opt.restore(&tensors, st.adam_t).map_err(err)?;
    Ok(Some(st))
}

/// Write the final `model.safetensors` + `model.json` (last).
fn write_model(out: &Path, model: &AlignModel, fp: &str, curve: &Curve, n_train: usize, n_holdout: usize) -> Result<ModelCard, AlignError> {
    let t: HashMap<String, Tensor> = model.params.all().into_iter().collect();
    let sha256 = save_tensors(&out.join("model.safetensors"), t)?;
    let model_fingerprint = Fingerprint::new("align-model/1").json(&model.spec).field(&sha256).finish();
    let card = ModelCard {
        schema: MODEL_SCHEMA.into(),
        kind: model.spec.name().into(),
        spec: model.spec.clone(),
        image_dim: model.image_dim,
        text_dim: model.text_dim,
        training_fingerprint: fp.into(),
        model_fingerprint,
        sha256,
        n_train,
        n_holdout,
        n_trainable: model.params.n_trainable(),
        curve: curve.clone(),
    };
    atomic::write_json(&out.join("model.json"), &card)?;
    Ok(card)
}

/// The card of a trained model (`model.json`), schema checked; the weights are not read.
pub fn read_card(dir: &Path) -> Result<ModelCard, AlignError> {
    let cp = dir.join("model.json");
    let bad = |message: String| AlignError::Checkpoint { path: cp.clone(), message };
    let card: ModelCard = serde_json::from_slice(&std::fs::read(&cp).map_err(|e| bad(format!("{e} (train it first: georag align train CONFIG)")))?).map_err(|e| bad(e.to_string()))?;
    if card.schema != MODEL_SCHEMA {
        return Err(bad(format!("schema {} (expected {MODEL_SCHEMA})", card.schema)));
    }
    Ok(card)
}

/// Load a trained model from its directory (`model.json` + `model.safetensors`).
pub fn load_model(dir: &Path, device: &Device) -> Result<(AlignModel, ModelCard), AlignError> {
    let bad = |path: &Path, message: String| AlignError::Checkpoint { path: path.to_path_buf(), message };
    let card = read_card(dir)?;
    let wp = dir.join("model.safetensors");
    let bytes = std::fs::read(&wp).map_err(|e| bad(&wp, e.to_string()))?;
    if sha256_hex(&bytes) != card.sha256 {
        return Err(bad(&wp, "sha256 differs from the one model.json records".into()));
    }
    // GeoCLIP initialisation is overwritten by the trained weights: do not read the wheel again.
    let mut spec = card.spec.clone();
    match &mut spec {
        AlignSpec::G3 { location, .. } | AlignSpec::Transgeoclip { location, .. } => location.geoclip_init = None,
    }
    let mut model = AlignModel::new(&spec, card.image_dim, card.text_dim, DType::F32, device)?;
    model.spec = card.spec.clone();
    let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(candle("reading model.safetensors"))?;
    let names: Vec<String> = model.params.all().into_keys().collect();
    for n in names {
        let t = tensors.get(&n).ok_or_else(|| bad(&wp, format!("tensor {n} missing")))?;
        model.params.set(&n, t).map_err(|m| bad(&wp, m))?;
    }
    Ok((model, card))
}

/// Train (or resume training) `spec` on `data`, writing checkpoints and the model into
/// `opts.out`.
pub fn train(spec: &AlignSpec, data: &TrainData, opts: &TrainOptions) -> Result<TrainReport, AlignError> {
    spec.validate()?;
    let ts = spec.train();
    if data.len() < 4 {
        return Err(AlignError::Config { message: format!("{} rows: too few to train and hold out", data.len()) });
    }
    let device = crate::embed::hf::device(&ts.device).map_err(|e| AlignError::Config { message: e.to_string() })?;
    // Every step allocates and frees its gradients and activations: keep them in the heap.
    crate::util::alloc::serve_large_from_heap();
    let dtype = opts.dtype.unwrap_or(DType::F32);
    let fp = training_fingerprint(spec, data);
    let model = AlignModel::new(spec, data.image_dim, data.text.as_ref().map(|t| t.1), dtype, &device)?;
    let vars: Vec<(String, candle_core::Var)> = model.params.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut opt = AdamW::new(vars, ParamsAdamW { lr: ts.lr, weight_decay: ts.weight_decay, ..Default::default() }).map_err(candle("optimizer"))?;
    let (train_rows, held) = split(data.len(), ts.holdout, ts.seed);
    std::fs::create_dir_all(&opts.out).map_err(|e| AlignError::Checkpoint { path: opts.out.clone(), message: e.to_string() })?;

    let mut st = State {
        schema: STATE_SCHEMA.into(),
        training_fingerprint: fp.clone(),
        epoch: 0,
        step_in_epoch: 0,
        global_step: 0,
        adam_t: 0,
        file: String::new(),
        sha256: String::new(),
        curve: Curve::default(),
    };
    let mut resumed_from = None;
    if let Some(s) = load_checkpoint(&opts.out, &model, &mut opt, &fp)? {
        resumed_from = Some(s.global_step);
        st = s;
    }
    let eval = |m: &AlignModel, epoch: usize| evaluate(m, data, &held, &ts.thresholds_km, ts.batch_size, epoch).map_err(candle("held-out evaluation"));
    if st.curve.evals.is_empty() {
        st.curve.evals.push(eval(&model, 0)?);
    }
    let per_epoch = epoch_batches(&train_rows, ts.batch_size, ts.seed, 0).len();
    let total = per_epoch * ts.epochs.saturating_sub(st.epoch);
    let progress = Progress::new(&format!("align {}", spec.name()), total.saturating_sub(st.step_in_epoch) as u64);
    let (mut step_seconds, mut samples) = (0f64, 0usize);
    let mut interrupted = false;
    'epochs: while st.epoch < ts.epochs {
        let lr = ts.lr * ts.lr_decay.powi(st.epoch as i32);
        opt.set_learning_rate(lr);
        let batches = epoch_batches(&train_rows, ts.batch_size, ts.seed, st.epoch);
        while st.step_in_epoch < batches.len() {
            if opts.max_steps.is_some_and(|m| st.global_step >= m) {
                interrupted = true;
                break 'epochs;
            }
            let b = &batches[st.step_in_epoch];
            let t0 = std::time::Instant::now();
            let (img, coords, text) = data.rows(b, dtype, &device).map_err(candle("batch"))?;
            let l = model.loss(&img, &coords, text.as_ref()).map_err(candle("forward"))?;
            let grads = l.total.backward().map_err(candle("backward"))?;
            opt.step(&grads).map_err(candle("optimizer step"))?;
            let scalar = |t: &Tensor| t.to_dtype(DType::F64).and_then(|t| t.to_scalar::<f64>());
            let loss = scalar(&l.total).map_err(candle("loss"))?;
            let parts = l.parts.iter().map(|(n, t)| Ok((n.to_string(), scalar(t)?))).collect::<candle_core::Result<Vec<_>>>().map_err(candle("loss"))?;
            step_seconds += t0.elapsed().as_secs_f64();
            samples += b.len();
            if !loss.is_finite() {
                return Err(AlignError::Config { message: format!("loss became {loss} at epoch {} step {} (lower train.lr?)", st.epoch, st.step_in_epoch) });
            }
            st.curve.steps.push(StepLog { epoch: st.epoch, step: st.global_step, lr, loss, parts });
            st.step_in_epoch += 1;
            st.global_step += 1;
            st.adam_t = opt.step_t;
            progress.inc(1);
            progress.set_message(format!("epoch {} loss {loss:.4}", st.epoch + 1));
            if ts.checkpoint_every_steps.is_some_and(|k| k > 0 && st.global_step.is_multiple_of(k)) && st.step_in_epoch < batches.len() {
                write_checkpoint(&opts.out, &model, &opt, &st)?;
            }
        }
        st.epoch += 1;
        st.step_in_epoch = 0;
        st.curve.evals.push(eval(&model, st.epoch)?);
        write_checkpoint(&opts.out, &model, &opt, &st)?;
    }
    progress.finish();
    let card = if interrupted {
        write_checkpoint(&opts.out, &model, &opt, &st)?;
        None
    } else {
        Some(write_model(&opts.out, &model, &fp, &st.curve, train_rows.len(), held.len())?)
    };
    Ok(TrainReport { curve: st.curve, resumed_from, interrupted, card, n_train: train_rows.len(), n_holdout: held.len(), out: opts.out.clone(), step_seconds, samples })
}

/// A trained model's GPS side as [`crate::select::generated::GpsTower`] (for `geo_verify`).
pub struct AlignedGps {
    pub model: AlignModel,
    pub card: ModelCard,
}

impl AlignedGps {
    pub fn load(dir: &Path, device: &Device) -> Result<AlignedGps, AlignError> {
        let (model, card) = load_model(dir, device)?;
        Ok(AlignedGps { model, card })
    }
}

impl crate::select::generated::GpsTower for AlignedGps {
    fn encode_coords(&self, coords: &[(f64, f64)]) -> Result<Vec<f32>, String> {
        let c: Vec<LatLon> = coords.iter().map(|&(lat, lon)| LatLon { lat, lon }).collect();
        gps_vectors(&self.model, &c, self.model.spec.train().batch_size).map_err(|e| e.to_string())
    }
    fn describe(&self) -> Option<String> {
        Some(format!("geo_verify (aligned {} image->GPS heads, model {}: cosine)", self.card.kind, self.card.model_fingerprint))
    }
}
