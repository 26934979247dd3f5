//! Local Hugging Face snapshot directories: `config.json`, `preprocessor_config.json` and
//! `model.safetensors` (or sharded `model-0000i-of-0000n.safetensors` with
//! `model.safetensors.index.json`). Nothing here downloads; a missing file is an error naming it.
//! Also: device and dtype selection, and streaming SHA-256 of weight files for fingerprints.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
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

/// An opened snapshot directory.
pub struct Snapshot {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    pub preprocessor: serde_json::Value,
    /// Weight files, in shard order.
    pub weights: Vec<PathBuf>,
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
        if !dir.is_dir() {
            return Err(HfError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory does not exist"),
            });
        }
        let config = read_json(&require_file(dir, "config.json")?)?;
        let preprocessor = read_json(&require_file(dir, "preprocessor_config.json")?)?;
        let weights = weight_files(dir)?;
        Ok(Snapshot { dir: dir.to_path_buf(), config, preprocessor, weights })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The vision part of `config.json`: `vision_config` of a full model, or the whole file of a
    /// vision-only model.
    pub fn vision_config(&self) -> &serde_json::Value {
        self.config.get("vision_config").unwrap_or(&self.config)
    }

    pub fn model_type(&self) -> Option<&str> {
        self.config.get("model_type").and_then(|v| v.as_str())
    }

    /// Memory-mapped weights.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>, HfError> {
        // SAFETY: the files are memory-mapped read-only; like every safetensors reader we rely on
        // nobody truncating them while the model is loaded.
        unsafe { VarBuilder::from_mmaped_safetensors(&self.weights, dtype, device) }.map_err(|source| HfError::Candle {
            path: self.weights[0].clone(),
            context: "reading safetensors".into(),
            source,
        })
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

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, HfError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(HfError::MissingFile { dir: dir.to_path_buf(), file: "model.safetensors (or model.safetensors.index.json)".into() });
    }
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

/// Stack prepared CHW pixel buffers (each `3 * h * w`) into an `(n, 3, h, w)` tensor.
pub fn pixels_tensor(items: Vec<Vec<f32>>, h: usize, w: usize, device: &Device, dtype: DType) -> candle_core::Result<candle_core::Tensor> {
    let n = items.len();
    let mut flat = Vec::with_capacity(n * 3 * h * w);
    for it in items {
        if it.len() != 3 * h * w {
            candle_core::bail!("prepared pixels have {} values, expected 3x{h}x{w}", it.len());
        }
        flat.extend_from_slice(&it);
    }
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
