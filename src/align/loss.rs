//! Training losses: CLIP's symmetric contrastive loss with a learnable temperature, and the
//! triplet loss with the hardest in-batch negative (TransGeoCLIP).

use candle_core::{D, DType, Result, Tensor};

/// Rows divided by their L2 norms.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    x.broadcast_div(&(x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?)
}

/// The largest logit scale CLIP allows (`logit_scale` is clamped at ln 100).
pub const MAX_LOG_SCALE: f64 = 4.605_170_185_988_091;

/// CLIP's loss for a batch of matching pairs (row `i` of `a` goes with row `i` of `b`):
/// `s = exp(min(log_scale, ln 100)) * norm(a) norm(b)^T`, loss = mean of the cross-entropies of
/// rows and of columns against the diagonal. `log_scale` is a scalar tensor (the learnable
/// temperature, `ln(1 / T)`).
pub fn clip_loss(a: &Tensor, b: &Tensor, log_scale: &Tensor) -> Result<Tensor> {
    let n = a.dim(0)?;
    let scale = log_scale.minimum(MAX_LOG_SCALE)?.exp()?;
    let logits = l2_normalize(a)?.matmul(&l2_normalize(b)?.t()?)?.broadcast_mul(&scale)?;
    let eye = Tensor::eye(n, logits.dtype(), logits.device())?;
    let rows = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let cols = candle_nn::ops::log_softmax(&logits.t()?, D::Minus1)?;
    let diag = |lp: Tensor| -> Result<Tensor> { (lp * &eye)?.sum_all()?.neg()? / n as f64 };
    (diag(rows)? + diag(cols)?)? / 2.0
}

/// Triplet loss with the hardest negative: for anchor `i` (a row of `a`) the positive is row
/// `i` of `b` and the negative the most similar row `j` of `b` that `exclude` does not mask (a
/// `(n, n)` 0/1 matrix; the diagonal is always excluded). Cosine similarities;
/// loss = mean_i max(0, margin - s_ii + max_j s_ij). An anchor without any negative contributes 0.
pub fn triplet_hardest(a: &Tensor, b: &Tensor, margin: f64, exclude: Option<&Tensor>) -> Result<Tensor> {
    let n = a.dim(0)?;
    let s = l2_normalize(a)?.matmul(&l2_normalize(b)?.t()?)?;
    let eye = Tensor::eye(n, s.dtype(), s.device())?;
    let mask = match exclude {
        Some(m) => eye.maximum(m)?,
        None => eye.clone(),
    };
    // Masked entries get -4 (below any cosine), so they are never the hardest negative.
    let masked = (s.broadcast_mul(&(1.0 - &mask)?)? + (&mask * -4.0)?)?;
    let hardest = masked.max_keepdim(D::Minus1)?;
    let pos = (&s * &eye)?.sum_keepdim(D::Minus1)?;
    let has_negative = hardest.ge(-3.0)?.to_dtype(s.dtype())?;
    let per = ((hardest - pos)? + margin)?.relu()?.broadcast_mul(&has_negative)?;
    per.mean_all()
}

/// The 0/1 matrix of pairs closer than `km` (for [`triplet_hardest`]'s `exclude`: a photo of the
/// same place is no negative).
pub fn near_pairs(coords: &[crate::record::LatLon], km: f64, dtype: DType, device: &candle_core::Device) -> Result<Tensor> {
    let n = coords.len();
    let mut m = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            if i != j && crate::metrics::haversine_km(coords[i], coords[j], crate::metrics::EARTH_RADIUS_KM) < km {
                m[i * n + j] = 1.0;
            }
        }
    }
    Tensor::from_vec(m, (n, n), &candle_core::Device::Cpu)?.to_dtype(dtype)?.to_device(device)
}
