//! The alignment models' layers, written on candle tensors so that candle's autograd trains them:
//! a seeded parameter store, linear layers and MLP heads, the map projections, the RFF location
//! encoder (G3 / GeoCLIP capsules), and TransGeoCLIP's location-attention Transformer layer.
//!
//! Every layer works in the dtype of its parameters (f32 for training, f64 in the gradient
//! checks). Parameters are initialised from [`Rng`] (SplitMix64), never from candle's
//! thread-local generator, so that a seed fixes the initial weights bit for bit.

use crate::embed::geoclip;
use crate::metrics::{EARTH_RADIUS_KM, haversine_km};
use crate::record::LatLon;
use crate::util::rng::Rng;
use candle_core::{D, DType, Device, Result, Tensor, Var};
use std::collections::BTreeMap;

/// Named trainable parameters (`Var`s) and fixed buffers (the RFF matrices), in name order.
pub struct Params {
    pub vars: BTreeMap<String, Var>,
    /// Untrained tensors, held as `Var`s so that loading a checkpoint updates them in place
    /// (the optimizer never sees them).
    pub buffers: BTreeMap<String, Var>,
    pub dtype: DType,
    pub device: Device,
}

impl Params {
    pub fn new(dtype: DType, device: &Device) -> Params {
        Params { vars: BTreeMap::new(), buffers: BTreeMap::new(), dtype, device: device.clone() }
    }

    fn tensor(&self, values: Vec<f64>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(self.dtype)?.to_device(&self.device)
    }

    /// A trainable parameter with the given values (row-major).
    pub fn var(&mut self, name: &str, values: Vec<f64>, shape: &[usize]) -> Result<Tensor> {
        let v = Var::from_tensor(&self.tensor(values, shape)?)?;
        let t = v.as_tensor().clone();
        self.vars.insert(name.to_string(), v);
        Ok(t)
    }

    /// A fixed (untrained) buffer. The model holds a detached view of it, so the backward pass
    /// never computes a gradient for it (nor through it to the layers' inputs); the view shares
    /// the `Var`'s storage, so loading a checkpoint still updates it in place.
    pub fn buffer(&mut self, name: &str, values: Vec<f64>, shape: &[usize]) -> Result<Tensor> {
        let v = Var::from_tensor(&self.tensor(values, shape)?)?;
        let t = v.as_tensor().detach();
        self.buffers.insert(name.to_string(), v);
        Ok(t)
    }

    /// PyTorch's `nn.Linear` initialisation (weight and bias uniform in ±1/sqrt(fan_in)).
    pub fn linear(&mut self, name: &str, fan_in: usize, fan_out: usize, rng: &mut Rng) -> Result<Linear> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let w: Vec<f64> = (0..fan_in * fan_out).map(|_| rng.range(-bound, bound)).collect();
        let b: Vec<f64> = (0..fan_out).map(|_| rng.range(-bound, bound)).collect();
        Ok(Linear { w: self.var(&format!("{name}.weight"), w, &[fan_out, fan_in])?, b: self.var(&format!("{name}.bias"), b, &[fan_out])? })
    }

    /// Every tensor, parameters and buffers, by name (for checkpoints).
    pub fn all(&self) -> BTreeMap<String, Tensor> {
        let mut m: BTreeMap<String, Tensor> = self.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        m.extend(self.buffers.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())));
        m
    }

    /// Overwrite a parameter's or buffer's values in place (shapes must agree).
    pub fn set(&self, name: &str, value: &Tensor) -> std::result::Result<(), String> {
        let value = value.to_dtype(self.dtype).and_then(|t| t.to_device(&self.device)).map_err(|e| e.to_string())?;
        let v = self.vars.get(name).or_else(|| self.buffers.get(name)).ok_or_else(|| format!("{name}: no such parameter or buffer"))?;
        if v.shape() != value.shape() {
            return Err(format!("{name}: shape {:?}, the model has {:?}", value.dims(), v.dims()));
        }
        v.set(&value).map_err(|e| e.to_string())
    }

    /// Number of trainable scalars.
    pub fn n_trainable(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }
}

/// `y = x W^T + b` (PyTorch layout: `W` is `(out, in)`).
#[derive(Clone)]
pub struct Linear {
    pub w: Tensor,
    pub b: Tensor,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }

    /// `relu(x W^T + b)`.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }

    /// Rank-2 f32/f64 CPU inputs run as one fused node ([`super::fused`]); the rest as tensor
    /// operations.
    fn apply(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        if x.device().is_cpu() && x.rank() == 2 && x.dtype() == self.w.dtype() && matches!(x.dtype(), DType::F32 | DType::F64) {
            return x.apply_op3(&self.w, &self.b, super::fused::LinearOp { relu });
        }
        self.unfused(x, relu)
    }

    /// The tensor-operation path (what the fused node computes).
    pub fn unfused(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let y = x.matmul(&self.w.t()?)?.broadcast_add(&self.b)?;
        if relu { y.relu() } else { Ok(y) }
    }
}

/// Linear -> ReLU -> Linear: G3's projection heads.
#[derive(Clone)]
pub struct Mlp {
    pub l1: Linear,
    pub l2: Linear,
}

impl Mlp {
    pub fn new(p: &mut Params, name: &str, dims: [usize; 3], rng: &mut Rng) -> Result<Mlp> {
        Ok(Mlp { l1: p.linear(&format!("{name}.0"), dims[0], dims[1], rng)?, l2: p.linear(&format!("{name}.2"), dims[1], dims[2], rng)? })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.l2.forward(&self.l1.forward_relu(x)?)
    }
}

/// The map projection applied to (lat, lon) in degrees before the Fourier features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Projection {
    /// G3: Web Mercator (EPSG:3857) divided by 20037508.3427892 (pi times the WGS-84 semi-major
    /// axis), so x = lon / 180 and y in [-1, 1] at the Web Mercator latitude limit
    /// (±85.0511287798°); latitudes beyond it are clamped to it (EPSG:3857 is undefined there
    /// and pyproj returns infinities at the poles).
    Mercator,
    /// GeoCLIP: Equal Earth scaled by 66.50336 / 180 ([`geoclip::equal_earth`]).
    EqualEarth,
}

/// The latitude where Web Mercator's y reaches ±20037508.3427892 m.
pub const MERCATOR_MAX_LAT: f64 = 85.051_128_779_806_59;

/// Web Mercator (spherical, R = 6378137 m) divided by 20037508.3427892: (x, y) in [-1, 1]^2.
pub fn mercator(lat: f64, lon: f64) -> [f64; 2] {
    let la = lat.clamp(-MERCATOR_MAX_LAT, MERCATOR_MAX_LAT).to_radians();
    let x = lon / 180.0;
    let y = (std::f64::consts::FRAC_PI_4 + la / 2.0).tan().ln() / std::f64::consts::PI;
    [x, y]
}

impl Projection {
    pub fn apply(self, lat: f64, lon: f64) -> [f64; 2] {
        match self {
            Projection::Mercator => mercator(lat, lon),
            Projection::EqualEarth => geoclip::equal_earth(lat, lon),
        }
    }
}

/// Shapes of the RFF location encoder (GeoCLIP's and G3's: 256 Fourier features per capsule,
/// hidden 1024, 512-d output, sigmas 2^0, 2^4, 2^8).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocationSpec {
    pub projection: Projection,
    pub sigmas: Vec<f64>,
    /// Fourier features per capsule (the encoding is `2 * rff_features` wide: cos and sin).
    pub rff_features: usize,
    pub hidden: usize,
    pub out_dim: usize,
    /// Initialise the capsules from GeoCLIP's `location_encoder_weights.pth` in this directory
    /// (the geoclip package's weights, as `embed::geoclip` finds them). Needs GeoCLIP's shapes.
    pub geoclip_init: Option<std::path::PathBuf>,
}

impl Default for LocationSpec {
    fn default() -> Self {
        LocationSpec { projection: Projection::Mercator, sigmas: geoclip::SIGMAS.to_vec(), rff_features: 256, hidden: 1024, out_dim: 512, geoclip_init: None }
    }
}

/// TransGeoCLIP's Transformer after each capsule.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformerSpec {
    /// Layers per capsule (the width is the capsule's `hidden`).
    pub layers: usize,
    pub heads: usize,
    /// Feed-forward width (PyTorch's `nn.TransformerEncoderLayer` default).
    pub ffn: usize,
    /// Distances enter the attention logits as `-exp(a_h) * d_ij / distance_scale_km`.
    pub distance_scale_km: f64,
}

impl Default for TransformerSpec {
    fn default() -> Self {
        TransformerSpec { layers: 3, heads: 8, ffn: 2048, distance_scale_km: 1000.0 }
    }
}

/// Layer normalisation over the last dimension, from differentiable ops (candle's fused
/// `layer_norm` has no backward pass).
#[derive(Clone)]
pub struct LayerNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
}

impl LayerNorm {
    pub fn new(p: &mut Params, name: &str, dim: usize) -> Result<LayerNorm> {
        Ok(LayerNorm { gamma: p.var(&format!("{name}.weight"), vec![1.0; dim], &[dim])?, beta: p.var(&format!("{name}.bias"), vec![0.0; dim], &[dim])? })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        xn.broadcast_mul(&self.gamma)?.broadcast_add(&self.beta)
    }
}

/// Location attention: multi-head self-attention over the points of a batch, each head's logits
/// biased by the pairwise great-circle distances, `q_i.k_j / sqrt(d_h) - exp(a_h) d_ij / s`
/// (a learnable slope per head, `s` = `distance_scale_km`). A point attends most to itself
/// (d_ii = 0) and to nearby points of the batch. No positional encoding: the layer is
/// permutation-equivariant over the batch.
#[derive(Clone)]
pub struct LocationAttention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// `(heads, 1, 1)` log-slopes.
    pub log_slope: Tensor,
    pub heads: usize,
}

impl LocationAttention {
    pub fn new(p: &mut Params, name: &str, dim: usize, heads: usize, rng: &mut Rng) -> Result<LocationAttention> {
        Ok(LocationAttention {
            q: p.linear(&format!("{name}.q"), dim, dim, rng)?,
            k: p.linear(&format!("{name}.k"), dim, dim, rng)?,
            v: p.linear(&format!("{name}.v"), dim, dim, rng)?,
            o: p.linear(&format!("{name}.o"), dim, dim, rng)?,
            log_slope: p.var(&format!("{name}.log_slope"), vec![0.0; heads], &[heads, 1, 1])?,
            heads,
        })
    }

    /// `x`: `(n, dim)`; `dist`: `(n, n)` distances already divided by the scale.
    pub fn forward(&self, x: &Tensor, dist: &Tensor) -> Result<Tensor> {
        let (n, dim) = x.dims2()?;
        let dh = dim / self.heads;
        let split = |t: Tensor| t.reshape((n, self.heads, dh))?.transpose(0, 1)?.contiguous();
        let (q, k, v) = (split(self.q.forward(x)?)?, split(self.k.forward(x)?)?, split(self.v.forward(x)?)?);
        let logits = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?;
        let bias = self.log_slope.exp()?.broadcast_mul(&dist.unsqueeze(0)?)?;
        let att = candle_nn::ops::softmax(&(logits - bias)?, D::Minus1)?;
        let out = att.matmul(&v)?.transpose(0, 1)?.reshape((n, dim))?;
        self.o.forward(&out)
    }
}

/// One post-norm Transformer encoder layer (PyTorch's `nn.TransformerEncoderLayer` defaults:
/// ReLU, `norm_first = false`, no dropout at our scale) whose self-attention is
/// [`LocationAttention`].
#[derive(Clone)]
pub struct TransformerLayer {
    pub att: LocationAttention,
    pub ln1: LayerNorm,
    pub ff: Mlp,
    pub ln2: LayerNorm,
}

impl TransformerLayer {
    pub fn new(p: &mut Params, name: &str, dim: usize, spec: &TransformerSpec, rng: &mut Rng) -> Result<TransformerLayer> {
        Ok(TransformerLayer {
            att: LocationAttention::new(p, &format!("{name}.att"), dim, spec.heads, rng)?,
            ln1: LayerNorm::new(p, &format!("{name}.ln1"), dim)?,
            ff: Mlp::new(p, &format!("{name}.ff"), [dim, spec.ffn, dim], rng)?,
            ln2: LayerNorm::new(p, &format!("{name}.ln2"), dim)?,
        })
    }
    pub fn forward(&self, x: &Tensor, dist: &Tensor) -> Result<Tensor> {
        let x = self.ln1.forward(&(x + self.att.forward(x, dist)?)?)?;
        self.ln2.forward(&(&x + self.ff.forward(&x)?)?)
    }
}

/// One RFF capsule: `[cos(2 pi x B^T), sin(2 pi x B^T)]` (B fixed, N(0, sigma^2)), three
/// Linear + ReLU layers, optional Transformer layers, a linear head.
pub struct Capsule {
    pub b: Tensor,
    pub layers: Vec<Linear>,
    pub transformer: Vec<TransformerLayer>,
    pub head: Linear,
}

impl Capsule {
    pub fn forward(&self, x2pi: &Tensor, dist: Option<&Tensor>) -> Result<Tensor> {
        let vp = x2pi.matmul(&self.b.t()?)?;
        let mut h = Tensor::cat(&[vp.cos()?, vp.sin()?], D::Minus1)?;
        for l in &self.layers {
            h = l.forward_relu(&h)?;
        }
        for t in &self.transformer {
            h = t.forward(&h, dist.ok_or_else(|| candle_core::Error::Msg("transformer capsule needs distances".into()))?)?;
        }
        self.head.forward(&h)
    }
}

/// The location tower: projection, capsules summed. With Transformer layers (TransGeoCLIP) a
/// point's features depend on the other points of its batch through the location attention.
pub struct LocationTower {
    pub spec: LocationSpec,
    pub capsules: Vec<Capsule>,
    pub distance_scale_km: f64,
}

impl LocationTower {
    /// Seeded random capsules (B ~ N(0, sigma^2) as the `rff` package draws it; Linear layers as
    /// PyTorch initialises them), or GeoCLIP's weights when `spec.geoclip_init` is set.
    pub fn new(p: &mut Params, spec: &LocationSpec, transformer: Option<&TransformerSpec>, rng: &mut Rng) -> std::result::Result<LocationTower, String> {
        let c = |e: candle_core::Error| e.to_string();
        let mut capsules = vec![];
        for (i, &sigma) in spec.sigmas.iter().enumerate() {
            let name = format!("location.LocEnc{i}");
            let bv: Vec<f64> = (0..spec.rff_features * 2).map(|_| sigma * rng.normal()).collect();
            let b = p.buffer(&format!("{name}.capsule.0.b"), bv, &[spec.rff_features, 2]).map_err(c)?;
            let mut layers = vec![p.linear(&format!("{name}.capsule.1"), 2 * spec.rff_features, spec.hidden, rng).map_err(c)?];
            layers.push(p.linear(&format!("{name}.capsule.3"), spec.hidden, spec.hidden, rng).map_err(c)?);
            layers.push(p.linear(&format!("{name}.capsule.5"), spec.hidden, spec.hidden, rng).map_err(c)?);
            let mut tl = vec![];
            if let Some(ts) = transformer {
                if ts.heads == 0 || !spec.hidden.is_multiple_of(ts.heads) {
                    return Err(format!("transformer.heads {} must divide location.hidden {}", ts.heads, spec.hidden));
                }
                for l in 0..ts.layers {
                    tl.push(TransformerLayer::new(p, &format!("{name}.transformer.{l}"), spec.hidden, ts, rng).map_err(c)?);
                }
            }
            let head = p.linear(&format!("{name}.head.0"), spec.hidden, spec.out_dim, rng).map_err(c)?;
            capsules.push(Capsule { b, layers, transformer: tl, head });
        }
        if let Some(dir) = &spec.geoclip_init {
            init_from_geoclip(p, spec, dir)?;
        }
        Ok(LocationTower { spec: spec.clone(), capsules, distance_scale_km: transformer.map_or(1000.0, |t| t.distance_scale_km) })
    }

    /// Projected coordinates times 2 pi, `(n, 2)`.
    pub fn inputs(&self, coords: &[LatLon], dtype: DType, device: &Device) -> Result<Tensor> {
        let v: Vec<f64> = coords.iter().flat_map(|c| self.spec.projection.apply(c.lat, c.lon).map(|x| x * 2.0 * std::f64::consts::PI)).collect();
        Tensor::from_vec(v, (coords.len(), 2), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)
    }

    /// Pairwise haversine distances over `distance_scale_km`, `(n, n)`.
    pub fn distances(&self, coords: &[LatLon], dtype: DType, device: &Device) -> Result<Tensor> {
        let n = coords.len();
        let mut d = vec![0f64; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let v = haversine_km(coords[i], coords[j], EARTH_RADIUS_KM) / self.distance_scale_km;
                d[i * n + j] = v;
                d[j * n + i] = v;
            }
        }
        Tensor::from_vec(d, (n, n), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)
    }

    pub fn has_transformer(&self) -> bool {
        self.capsules.iter().any(|c| !c.transformer.is_empty())
    }

    /// Raw `(n, out_dim)` features of a batch of coordinates (the sum over capsules).
    pub fn forward(&self, coords: &[LatLon], dtype: DType, device: &Device) -> Result<Tensor> {
        let x = self.inputs(coords, dtype, device)?;
        let dist = if self.has_transformer() { Some(self.distances(coords, dtype, device)?) } else { None };
        let mut sum: Option<Tensor> = None;
        for c in &self.capsules {
            let o = c.forward(&x, dist.as_ref())?;
            sum = Some(match sum {
                None => o,
                Some(s) => (s + o)?,
            });
        }
        sum.ok_or_else(|| candle_core::Error::Msg("no capsules".into()))
    }
}

/// Copy GeoCLIP's released capsule weights (`LocEnc{i}.capsule.{0.b,1,3,5}`, `head.0`) into the
/// tower. The Transformer layers of TransGeoCLIP have no GeoCLIP counterpart and keep their seeded
/// initialisation.
fn init_from_geoclip(p: &Params, spec: &LocationSpec, dir: &std::path::Path) -> std::result::Result<(), String> {
    let d = LocationSpec::default();
    if spec.sigmas != d.sigmas || spec.rff_features != d.rff_features || spec.hidden != d.hidden || spec.out_dim != d.out_dim {
        return Err(format!(
            "location.geoclip_init needs GeoCLIP's shapes (sigmas {:?}, rff_features {}, hidden {}, out_dim {})",
            d.sigmas, d.rff_features, d.hidden, d.out_dim
        ));
    }
    let path = geoclip::find_file(dir, "weights", geoclip::LOCATION_WEIGHTS).map_err(|e| e.to_string())?;
    let tensors: BTreeMap<String, Tensor> = candle_core::pickle::read_all(&path).map_err(|e| format!("{}: {e}", path.display()))?.into_iter().collect();
    for i in 0..spec.sigmas.len() {
        let mut names = vec![format!("LocEnc{i}.capsule.0.b")];
        for l in ["capsule.1", "capsule.3", "capsule.5", "head.0"] {
            names.push(format!("LocEnc{i}.{l}.weight"));
            names.push(format!("LocEnc{i}.{l}.bias"));
        }
        for n in names {
            let t = tensors.get(&n).ok_or_else(|| format!("{}: tensor {n} missing", path.display()))?;
            p.set(&format!("location.{n}"), t).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}
