//! AdamW with its state exposed for checkpoints.
//!
//! `candle_nn::AdamW` keeps its moments and step count private, so a checkpoint could not resume
//! the same loss curve from it. This is the same update, operation for operation (the unit test
//! checks it bit for bit against `candle_nn::AdamW`), with the moments and `t` readable and
//! settable.
//!
//! On the CPU (f32, f64) the update runs as three in-place passes over each parameter's storage
//! (first moment, second moment, parameter) instead of eleven tensor operations that each
//! allocate a parameter-sized buffer: the same arithmetic, element by element in the same order
//! and precision, so the result is still bit-identical to `candle_nn::AdamW` (the unit test
//! checks both paths). Other devices and dtypes take the tensor-operation path.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor, Var, WithDType};
use rayon::prelude::*;
pub use candle_nn::ParamsAdamW;

pub struct AdamW {
    /// `(name, parameter, first moment, second moment)`.
    pub vars: Vec<(String, Var, Var, Var)>,
    pub step_t: usize,
    pub params: ParamsAdamW,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, params: ParamsAdamW) -> Result<AdamW> {
        let vars = vars
            .into_iter()
            .map(|(n, v)| {
                let m = Var::zeros(v.shape(), v.dtype(), v.device())?;
                let s = Var::zeros(v.shape(), v.dtype(), v.device())?;
                Ok((n, v, m, s))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW { vars, step_t: 0, params })
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// `candle_nn::AdamW::step`'s arithmetic.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_t += 1;
        let lr = self.params.lr;
        let lr_lambda = lr * self.params.weight_decay;
        let (beta1, beta2) = (self.params.beta1, self.params.beta2);
        let scale_m = 1f64 / (1f64 - beta1.powi(self.step_t as i32));
        let scale_v = 1f64 / (1f64 - beta2.powi(self.step_t as i32));
        for (_, theta, m, v) in &self.vars {
            if let Some(g) = grads.get(theta) {
                if theta.device().is_cpu() && matches!(theta.dtype(), DType::F32 | DType::F64) {
                    let g = g.contiguous()?;
                    m.as_tensor().inplace_op2(&g, &Moment { keep: beta1, take: 1.0 - beta1, square: false })?;
                    v.as_tensor().inplace_op2(&g, &Moment { keep: beta2, take: 1.0 - beta2, square: true })?;
                    theta.as_tensor().inplace_op3(m.as_tensor(), v.as_tensor(), &Update { decay: 1f64 - lr_lambda, scale_m, scale_v, eps: self.params.eps, lr })?;
                    continue;
                }
                let next_m = ((m.as_tensor() * beta1)? + (g * (1.0 - beta1))?)?;
                let next_v = ((v.as_tensor() * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
                let m_hat = (&next_m * scale_m)?;
                let v_hat = (&next_v * scale_v)?;
                let next_theta = (theta.as_tensor() * (1f64 - lr_lambda))?;
                let adjusted = (m_hat / (v_hat.sqrt()? + self.params.eps)?)?;
                let next_theta = (next_theta - (adjusted * lr)?)?;
                m.set(&next_m)?;
                v.set(&next_v)?;
                theta.set(&next_theta)?;
            }
        }
        Ok(())
    }

    /// The moments by name (`m.<name>`, `v.<name>`), for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        for (n, _, m, v) in &self.vars {
            out.push((format!("m.{n}"), m.as_tensor().clone()));
            out.push((format!("v.{n}"), v.as_tensor().clone()));
        }
        out
    }

    /// Restore the moments from a checkpoint's tensors and the step count.
    pub fn restore(&mut self, tensors: &std::collections::HashMap<String, Tensor>, step_t: usize) -> std::result::Result<(), String> {
        for (n, _, m, v) in &self.vars {
            for (prefix, var) in [("m", m), ("v", v)] {
                let key = format!("{prefix}.{n}");
                let t = tensors.get(&key).ok_or_else(|| format!("optimizer state {key} missing"))?;
                if t.shape() != var.shape() {
                    return Err(format!("optimizer state {key}: shape {:?}, expected {:?}", t.dims(), var.dims()));
                }
                var.set(&t.to_dtype(var.dtype()).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            }
        }
        self.step_t = step_t;
        Ok(())
    }
}

/// Elements per rayon task of the in-place passes.
const CHUNK: usize = 1 << 15;

/// The contiguous slice of `s` under `l`, or an error naming `op`.
fn slice_of<'a, T: WithDType>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{op}: non-contiguous operand")))?;
    Ok(&s.as_slice::<T>()?[a..b])
}

/// The contiguous `[a, b)` range of `l`, or an error naming `op`.
fn range_of(op: &str, l: &Layout) -> Result<std::ops::Range<usize>> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{op}: non-contiguous operand")))?;
    Ok(a..b)
}

/// `sqrt` for the two dtypes the in-place path takes.
trait Sqrt: WithDType {
    fn root(self) -> Self;
}
impl Sqrt for f32 {
    fn root(self) -> f32 {
        self.sqrt()
    }
}
impl Sqrt for f64 {
    fn root(self) -> f64 {
        self.sqrt()
    }
}

/// A moment in place: `m = m * keep + g * take` (the second moment: `g * g` for `g`), each product
/// as candle's `affine` computes it (`x * c + 0`).
struct Moment {
    keep: f64,
    take: f64,
    square: bool,
}

impl Moment {
    fn run<T: WithDType>(&self, m: &mut [T], g: &[T]) -> Result<()> {
        if m.len() != g.len() {
            candle_core::bail!("adamw moment: {} values, gradient has {}", m.len(), g.len());
        }
        let (keep, take, zero) = (T::from_f64(self.keep), T::from_f64(self.take), T::from_f64(0.0));
        let square = self.square;
        m.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(m, g)| {
            for (m, &g) in m.iter_mut().zip(g) {
                let g = if square { g * g } else { g };
                *m = (*m * keep + zero) + (g * take + zero);
            }
        });
        Ok(())
    }
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let n = self.name();
        let r = range_of(n, l1)?;
        match s1 {
            CpuStorage::F32(d) => self.run(&mut d[r], slice_of::<f32>(n, s2, l2)?),
            CpuStorage::F64(d) => self.run(&mut d[r], slice_of::<f64>(n, s2, l2)?),
            _ => candle_core::bail!("{n}: only f32 and f64 are updated in place"),
        }
    }
}

/// The parameter in place from the updated moments:
/// `theta = theta * decay - (m * scale_m) / (sqrt(v * scale_v) + eps) * lr`, as candle's
/// operations round it.
struct Update {
    decay: f64,
    scale_m: f64,
    scale_v: f64,
    eps: f64,
    lr: f64,
}

impl Update {
    fn run<T: Sqrt>(&self, theta: &mut [T], m: &[T], v: &[T]) -> Result<()> {
        if theta.len() != m.len() || theta.len() != v.len() {
            candle_core::bail!("adamw update: {} values, moments have {} and {}", theta.len(), m.len(), v.len());
        }
        let c = |x: f64| T::from_f64(x);
        let (decay, sm, sv, eps, lr, zero, one) = (c(self.decay), c(self.scale_m), c(self.scale_v), c(self.eps), c(self.lr), c(0.0), c(1.0));
        theta.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK)).zip(v.par_chunks(CHUNK)).for_each(|((t, m), v)| {
            for ((t, &m), &v) in t.iter_mut().zip(m).zip(v) {
                let m_hat = m * sm + zero;
                let v_hat = v * sv + zero;
                let adjusted = m_hat / (v_hat.root() * one + eps);
                *t = (*t * decay + zero) - (adjusted * lr + zero);
            }
        });
        Ok(())
    }
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<()> {
        let n = self.name();
        let r = range_of(n, l1)?;
        match s1 {
            CpuStorage::F32(d) => self.run(&mut d[r], slice_of::<f32>(n, s2, l2)?, slice_of::<f32>(n, s3, l3)?),
            CpuStorage::F64(d) => self.run(&mut d[r], slice_of::<f64>(n, s2, l2)?, slice_of::<f64>(n, s3, l3)?),
            _ => candle_core::bail!("{n}: only f32 and f64 are updated in place"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::Optimizer;

    /// Same parameters, same gradients: the two optimizers give bit-identical parameters, in f32
    /// and f64, on a parameter larger than one in-place chunk (the CPU path runs in parallel
    /// chunks) and on a small one.
    #[test]
    fn matches_candle_nn_adamw_bitwise() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for n in [12usize, 3 * CHUNK + 17] {
                let init = ((Tensor::arange(0f32, n as f32, &dev).unwrap() * 0.37).unwrap().sin().unwrap() * 0.1).unwrap().to_dtype(dtype).unwrap();
                let (a, b) = (Var::from_tensor(&init).unwrap(), Var::from_tensor(&init).unwrap());
                let p = ParamsAdamW { lr: 0.01, weight_decay: 0.1, ..Default::default() };
                let mut ours = AdamW::new(vec![("w".into(), a.clone())], p.clone()).unwrap();
                let mut theirs = candle_nn::AdamW::new(vec![b.clone()], p).unwrap();
                for step in 0..5 {
                    let target = (Tensor::arange(0f32, n as f32, &dev).unwrap().cos().unwrap() * step as f64).unwrap().to_dtype(dtype).unwrap();
                    let la = (a.as_tensor() - &target).unwrap().sqr().unwrap().sum_all().unwrap();
                    let lb = (b.as_tensor() - &target).unwrap().sqr().unwrap().sum_all().unwrap();
                    ours.step(&la.backward().unwrap()).unwrap();
                    theirs.step(&lb.backward().unwrap()).unwrap();
                }
                let bits = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(a.as_tensor()), bits(b.as_tensor()), "{dtype:?}, {n} values");
                assert_ne!(bits(a.as_tensor()), bits(&init), "{dtype:?}: the parameters moved");
                for (name, t) in ours.state() {
                    assert!(t.to_dtype(DType::F64).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() > 0.0, "{name} updated");
                }
                assert_eq!(a.dtype(), dtype);
            }
        }
    }
}
