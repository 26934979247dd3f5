//! Local Hugging Face snapshot directories: `config.json`, `preprocessor_config.json` and the
//! weights, looked for in transformers' order (`modeling_utils`, local directory):
//! `model.safetensors`, `model.safetensors.index.json` (sharded), `pytorch_model.bin`,
//! `pytorch_model.bin.index.json` (sharded). Safetensors are memory-mapped; PyTorch files (zip
//! pickles, torch >= 1.6) are read lazily, tensor by tensor, through candle's pickle reader.
//! Either way every tensor is converted to the run dtype (checkpoints stored in f16/bf16 run in
//! f32 on the CPU), and tensors nobody asks for (`text_model.*`, `logit_scale`, position-id
//! buffers) are never read. Nothing here downloads; a missing file is an error naming it.
//! Also: device and dtype selection, and streaming SHA-256 of the weight files actually used.

use super::HfParams;
use super::preprocess::{Family, Preprocess};
use crate::util::fingerprint::Fingerprint;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Error while opening a snapshot or building a model from it.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{dir}: missing `{file}` (expected a local Hugging Face snapshot directory; nothing is downloaded)")]
    MissingFile { dir: PathBuf, file: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{dir}: the weights have no tensor `{tensor}` ({missing} expected tensors missing in all)")]
    MissingTensor { dir: PathBuf, tensor: String, missing: usize },
    #[error("{path}: {context}: {source}")]
    Candle { path: PathBuf, context: String, source: candle_core::Error },
    #[error("device `{0}`: {1}")]
    Device(String, String),
}

/// Model dtype from the config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Dtype {
    pub fn candle(self) -> DType {
        match self {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::Bf16 => DType::BF16,
        }
    }
}

/// Parse `cpu`, `cuda` or `cuda:N`. CUDA needs a build with the `cuda` cargo feature.
pub fn device(spec: &str) -> Result<Device, HfError> {
    let s = spec.trim();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| HfError::Device(spec.into(), "expected `cpu`, `cuda` or `cuda:N`".into()))?,
        None => return Err(HfError::Device(spec.into(), "expected `cpu`, `cuda` or `cuda:N`".into())),
    };
    cuda_device(spec, ordinal)
}

#[cfg(feature = "cuda")]
fn cuda_device(spec: &str, ordinal: usize) -> Result<Device, HfError> {
    // candle's error is cudarc's DriverError (code and driver message) but not which GPU.
    Device::new_cuda(ordinal).map_err(|e| {
        HfError::Device(spec.into(), format!("cannot open CUDA device {ordinal}: {e} (does `nvidia-smi` list it? `device: cpu` needs no GPU)"))
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(spec: &str, _ordinal: usize) -> Result<Device, HfError> {
    Err(HfError::Device(
        spec.into(),
        "this georag was built without CUDA support; rebuild with `cargo build --release --features cuda` (needs the CUDA toolkit)".into(),
    ))
}

/// Check a dtype against a device: candle's CPU matmul has no bf16 and f16 on CPU is slow and
/// not what the references use, so CPU runs in f32.
pub fn check_dtype(device: &Device, dtype: Dtype, spec: &str) -> Result<(), HfError> {
    if device.is_cpu() && dtype != Dtype::F32 {
        return Err(HfError::Device(spec.into(), format!("dtype {dtype:?} is not supported on CPU; use f32 (f16/bf16 are for CUDA)")));
    }
    Ok(())
}

/// What an image encoder's snapshot says before any weight is decoded: the tower's config as
/// parsed, the preprocessing (accepted by the tower's own check of its input size) and the
/// encoder's fingerprint: `tag`, the SHA-256 of the weight files, the config, the preprocessing
/// and the dtype. CLIP and SigLIP both open their snapshots through it.
pub struct VisionFiles<C> {
    pub snap: Snapshot,
    pub cfg: C,
    pub pre: Preprocess,
    pub fp: String,
}

impl<C> VisionFiles<C> {
    /// `config` parses the tower's config from the snapshot and returns it with what of it the
    /// fingerprint hashes; `check` refuses preprocessing the tower cannot take, and its message
    /// is reported against `preprocessor_config.json`.
    pub fn open<F: Serialize>(
        p: &HfParams,
        family: Family,
        tag: &str,
        config: impl FnOnce(&Snapshot) -> Result<(C, F), HfError>,
        check: impl FnOnce(&C, &Preprocess) -> Result<(), String>,
    ) -> Result<VisionFiles<C>, HfError> {
        let snap = Snapshot::open(&p.dir)?;
        let (cfg, hashed) = config(&snap)?;
        let path = p.dir.join("preprocessor_config.json");
        let pre = Preprocess::from_config(&snap.preprocessor, family, &path)?;
        check(&cfg, &pre).map_err(|message| HfError::Config { path, message })?;
        let fp = Fingerprint::new(tag).field(&snap.weights_sha256()?).json(&hashed).json(&pre).json(&p.dtype).finish();
        Ok(VisionFiles { snap, cfg, pre, fp })
    }

    /// The device and dtype `p` asks for (checked against each other) and the snapshot's
    /// weights in that dtype on that device, every tensor of `expected` present.
    pub fn weights(&self, p: &HfParams, expected: &[String]) -> Result<(Device, DType, VarBuilder<'static>), HfError> {
        let device = device(&p.device)?;
        check_dtype(&device, p.dtype, &p.device)?;
        let dtype = p.dtype.candle();
        let vb = self.snap.var_builder(dtype, &device)?;
        self.snap.require_tensors(&vb, expected)?;
        Ok((device, dtype, vb))
    }
}

/// An encoder's display name: its kind and the snapshot directory's name (`clip:DIR`).
pub fn encoder_name(kind: &str, p: &HfParams) -> String {
    format!("{kind}:{}", p.dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
}

/// An opened snapshot directory.
pub struct Snapshot {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    pub preprocessor: serde_json::Value,
    /// Weight files, in shard order.
    pub weights: Vec<PathBuf>,
    pub format: WeightFormat,
    /// The file that names the weights: the single weight file, or the shard index.
    pub weights_source: PathBuf,
}

/// How the weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    Safetensors,
    /// PyTorch `torch.save` zip archives (`pytorch_model*.bin`).
    Pytorch,
}

fn read_json(path: &Path) -> Result<serde_json::Value, HfError> {
    let text = std::fs::read_to_string(path).map_err(|source| HfError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| HfError::Json { path: path.to_path_buf(), source })
}

fn require_file(dir: &Path, file: &str) -> Result<PathBuf, HfError> {
    let p = dir.join(file);
    if p.is_file() { Ok(p) } else { Err(HfError::MissingFile { dir: dir.to_path_buf(), file: file.into() }) }
}

impl Snapshot {
    /// Open `dir`: both JSON files are required, and either `model.safetensors` or
    /// `model.safetensors.index.json` with every shard it names.
    pub fn open(dir: &Path) -> Result<Snapshot, HfError> {
        Self::open_with(dir, true)
    }

    /// [`Snapshot::open`] for a text tower: `preprocessor_config.json` (image preprocessing) may
    /// be absent, and then reads as `null`.
    pub fn open_text(dir: &Path) -> Result<Snapshot, HfError> {
        Self::open_with(dir, false)
    }

    fn open_with(dir: &Path, images: bool) -> Result<Snapshot, HfError> {
        if !dir.is_dir() {
            return Err(HfError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory does not exist"),
            });
        }
        let config = read_json(&require_file(dir, "config.json")?)?;
        let preprocessor = match (images, dir.join("preprocessor_config.json")) {
            (false, p) if !p.is_file() => serde_json::Value::Null,
            _ => read_json(&require_file(dir, "preprocessor_config.json")?)?,
        };
        let (format, weights_source, weights) = weight_files(dir)?;
        Ok(Snapshot { dir: dir.to_path_buf(), config, preprocessor, weights, format, weights_source })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Whether `config.json` is a full (image + text) model's, with a `vision_config` inside.
    pub fn is_full_model(&self) -> bool {
        self.config.get("vision_config").is_some()
    }

    /// The vision part of `config.json`, `vision_config` of a full model (`null`: all defaults)
    /// or the whole file of a vision-only model, with `null` fields removed so that they take
    /// their defaults.
    pub fn vision_config(&self) -> serde_json::Value {
        match self.config.get("vision_config") {
            Some(serde_json::Value::Null) => serde_json::json!({}),
            Some(v) => without_nulls(v),
            None => without_nulls(&self.config),
        }
    }

    pub fn model_type(&self) -> Option<&str> {
        self.config.get("model_type").and_then(|v| v.as_str())
    }

    /// The weights, every tensor converted to `dtype` when read.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>, HfError> {
        match self.format {
            // SAFETY: the files are memory-mapped read-only; like every safetensors reader we
            // rely on nobody truncating them while the model is loaded.
            WeightFormat::Safetensors => unsafe { VarBuilder::from_mmaped_safetensors(&self.weights, dtype, device) }
                .map_err(|source| HfError::Candle { path: self.weights_source.clone(), context: "reading safetensors".into(), source }),
            WeightFormat::Pytorch => Ok(VarBuilder::from_backend(Box::new(PthFiles::open(&self.weights)?), dtype, device.clone())),
        }
    }

    /// Fail naming the first missing tensor (candle silently randomises some, e.g. CLIP's class
    /// embedding).
    pub fn require_tensors(&self, vb: &VarBuilder, names: &[String]) -> Result<(), HfError> {
        let missing: Vec<&String> = names.iter().filter(|n| !vb.contains_tensor(n)).collect();
        match missing.first() {
            None => Ok(()),
            Some(first) => Err(HfError::MissingTensor { dir: self.dir.clone(), tensor: (*first).clone(), missing: missing.len() }),
        }
    }

    /// SHA-256 of the weight files, in order (hex).
    pub fn weights_sha256(&self) -> Result<String, HfError> {
        sha256_files(&self.weights)
    }
}

/// The weight files, in transformers' order of preference: safetensors before PyTorch, a single
/// file before a sharded index.
fn weight_files(dir: &Path) -> Result<(WeightFormat, PathBuf, Vec<PathBuf>), HfError> {
    let candidates = [
        (WeightFormat::Safetensors, "model.safetensors", "model.safetensors.index.json"),
        (WeightFormat::Pytorch, "pytorch_model.bin", "pytorch_model.bin.index.json"),
    ];
    for (format, single, index) in candidates {
        let single = dir.join(single);
        if single.is_file() {
            return Ok((format, single.clone(), vec![single]));
        }
        let index = dir.join(index);
        if index.is_file() {
            return Ok((format, index.clone(), shard_files(dir, &index)?));
        }
    }
    Err(HfError::MissingFile {
        dir: dir.to_path_buf(),
        file: "model.safetensors (or model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)".into(),
    })
}

/// The files a shard index's `weight_map` names, each required to exist.
fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>, HfError> {
    let index = index.to_path_buf();
    let v = read_json(&index)?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| HfError::Config {
        path: index.clone(),
        message: "no `weight_map` object".into(),
    })?;
    let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
    if files.is_empty() {
        return Err(HfError::Config { path: index, message: "`weight_map` names no files".into() });
    }
    files.into_iter().map(|f| require_file(dir, f)).collect()
}

/// PyTorch weight files as a candle backend: each file's tensor table is read once; a tensor is
/// read from the file that holds it when asked for (candle's own `PthTensors` backend reads a
/// tensor in full just to answer `contains_tensor`).
struct PthFiles {
    files: Vec<candle_core::pickle::PthTensors>,
    which: HashMap<String, usize>,
}

impl PthFiles {
    fn open(paths: &[PathBuf]) -> Result<PthFiles, HfError> {
        let mut files = vec![];
        let mut which = HashMap::new();
        for (i, p) in paths.iter().enumerate() {
            let f = candle_core::pickle::PthTensors::new(p, None).map_err(|source| HfError::Candle {
                path: p.clone(),
                context: "reading PyTorch weights (a torch.save zip archive, torch >= 1.6)".into(),
                source,
            })?;
            for name in f.tensor_infos().keys() {
                which.insert(name.clone(), i);
            }
            files.push(f);
        }
        Ok(PthFiles { files, which })
    }
}

impl SimpleBackend for PthFiles {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape { msg: format!("shape mismatch for {name}"), expected: s, got: t.shape().clone() }.bt());
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let missing = || candle_core::Error::CannotFindTensor { path: name.to_string() }.bt();
        let file = self.which.get(name).ok_or_else(missing)?;
        self.files[*file].get(name)?.ok_or_else(missing)?.to_device(dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.which.contains_key(name)
    }
}

/// A JSON object without its `null` fields (a `null` in a Hugging Face config means "not set",
/// so the field takes its default). Anything else is returned as is.
pub fn without_nulls(v: &serde_json::Value) -> serde_json::Value {
    match v.as_object() {
        Some(o) => serde_json::Value::Object(o.iter().filter(|(_, x)| !x.is_null()).map(|(k, x)| (k.clone(), x.clone())).collect()),
        None => v.clone(),
    }
}

/// SHA-256 over several files (each length-prefixed), hex.
pub fn sha256_files(files: &[PathBuf]) -> Result<String, HfError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in files {
        let mut f = std::fs::File::open(p).map_err(|source| HfError::Io { path: p.clone(), source })?;
        let len = f.metadata().map_err(|source| HfError::Io { path: p.clone(), source })?.len();
        h.update(len.to_le_bytes());
        loop {
            let n = f.read(&mut buf).map_err(|source| HfError::Io { path: p.clone(), source })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Read a field of a JSON config with a default when absent.
pub fn get_or<T: serde::de::DeserializeOwned>(v: &serde_json::Value, key: &str, default: T, path: &Path) -> Result<T, HfError> {
    match v.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(x) => serde_json::from_value(x.clone())
            .map_err(|e| HfError::Config { path: path.to_path_buf(), message: format!("`{key}`: {e}") }),
    }
}

/// Concatenate prepared CHW pixel buffers (each `3 * h * w`) into one `(n, 3, h, w)` buffer.
pub fn pixels_flat(items: Vec<Vec<f32>>, h: usize, w: usize) -> Result<Vec<f32>, String> {
    let want = 3 * h * w;
    if let Some(bad) = items.iter().find(|it| it.len() != want) {
        return Err(format!("prepared pixels have {} values, expected 3x{h}x{w}", bad.len()));
    }
    Ok(items.concat())
}

/// Stack prepared CHW pixel buffers (each `3 * h * w`) into an `(n, 3, h, w)` tensor.
pub fn pixels_tensor(items: Vec<Vec<f32>>, h: usize, w: usize, device: &Device, dtype: DType) -> candle_core::Result<candle_core::Tensor> {
    let n = items.len();
    let flat = pixels_flat(items, h, w).map_err(candle_core::Error::Msg)?;
    candle_core::Tensor::from_vec(flat, (n, 3, h, w), device)?.to_dtype(dtype)
}

/// `(n, d)` features to row-major f32, each row L2-normalised (in f32 on the CPU).
pub fn normalized_rows(t: &candle_core::Tensor) -> candle_core::Result<Vec<f32>> {
    let t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let (_, d) = t.dims2()?;
    let mut v = t.flatten_all()?.to_vec1::<f32>()?;
    for row in v.chunks_mut(d.max(1)) {
        super::im2gps::l2_normalize(row);
    }
    Ok(v)
}

/// A snapshot with the given `config.json` and nothing else, for unit tests of config parsing.
#[cfg(test)]
pub(crate) fn test_snapshot(config: serde_json::Value) -> Snapshot {
    let dir = PathBuf::from("/snap");
    Snapshot { dir: dir.clone(), config, preprocessor: serde_json::json!({}), weights: vec![], format: WeightFormat::Safetensors, weights_source: dir.join("model.safetensors") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let d = std::env::temp_dir().join(format!("georag-hf-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let e = Snapshot::open(&d).err().unwrap().to_string();
        assert!(e.contains("config.json"), "{e}");
        std::fs::write(d.join("config.json"), "{}").unwrap();
        std::fs::write(d.join("preprocessor_config.json"), "{}").unwrap();
        let e = Snapshot::open(&d).err().unwrap().to_string();
        assert!(e.contains("model.safetensors"), "{e}");
        std::fs::write(d.join("model.safetensors.index.json"), r#"{"weight_map": {"a": "model-00001-of-00002.safetensors"}}"#).unwrap();
        let e = Snapshot::open(&d).err().unwrap().to_string();
        assert!(e.contains("model-00001-of-00002.safetensors"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn device_parsing() {
        assert!(device("cpu").unwrap().is_cpu());
        assert!(device("tpu").is_err());
        assert!(device("cuda:x").is_err());
        #[cfg(not(feature = "cuda"))]
        {
            let e = device("cuda:0").err().unwrap().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        // With the feature: a GPU opens; no GPU (or no driver) is an error naming the device.
        #[cfg(feature = "cuda")]
        match device("cuda:0") {
            Ok(d) => assert!(d.is_cuda()),
            Err(e) => assert!(e.to_string().contains("cannot open CUDA device 0"), "{e}"),
        }
        assert!(check_dtype(&Device::Cpu, Dtype::Bf16, "cpu").is_err());
        assert!(check_dtype(&Device::Cpu, Dtype::F32, "cpu").is_ok());
    }
}
