//! AdamW with its state exposed for checkpoints.
//!
//! `candle_nn::AdamW` keeps its moments and step count private, so a checkpoint could not resume
//! the same loss curve from it. This is the same update, operation for operation (the unit test
//! checks it bit for bit against `candle_nn::AdamW`), with the moments and `t` readable and
//! settable.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::Optimizer;

    /// Same parameters, same gradients: the two optimizers give bit-identical parameters.
    #[test]
    fn matches_candle_nn_adamw_bitwise() {
        let dev = Device::Cpu;
        let init = Tensor::arange(0f32, 12.0, &dev).unwrap().reshape((3, 4)).unwrap();
        let (a, b) = (Var::from_tensor(&(&init * 0.1).unwrap()).unwrap(), Var::from_tensor(&(&init * 0.1).unwrap()).unwrap());
        let p = ParamsAdamW { lr: 0.01, weight_decay: 0.1, ..Default::default() };
        let mut ours = AdamW::new(vec![("w".into(), a.clone())], p.clone()).unwrap();
        let mut theirs = candle_nn::AdamW::new(vec![b.clone()], p).unwrap();
        for step in 0..5 {
            let target = Tensor::full(step as f32, (3, 4), &dev).unwrap();
            let la = (a.as_tensor() - &target).unwrap().sqr().unwrap().sum_all().unwrap();
            let lb = (b.as_tensor() - &target).unwrap().sqr().unwrap().sum_all().unwrap();
            ours.step(&la.backward().unwrap()).unwrap();
            theirs.step(&lb.backward().unwrap()).unwrap();
        }
        let (x, y) = (a.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(x, y);
        assert_ne!(x, (init * 0.1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(a.dtype(), DType::F32);
    }
}
