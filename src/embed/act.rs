//! The `hidden_act` of a Hugging Face vision config, with transformers' formulas
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/activations.py>,
//! `ACT2CLS`). Only the GELU family that CLIP- and SigLIP-style checkpoints use is supported:
//! OpenAI CLIP uses `quick_gelu`, LAION/OpenCLIP conversions `gelu` (erf), SigLIP
//! `gelu_pytorch_tanh`. Any other name is an error listing these.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// An activation function by its transformers name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Act {
    /// `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// `x * Φ(x)` with the exact erf (`gelu`, `gelu_python`).
    Gelu,
    GeluPython,
    /// The tanh approximation `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))` (`gelu_new`,
    /// `gelu_pytorch_tanh`, `gelu_python_tanh`, `gelu_accurate`).
    GeluNew,
    GeluPytorchTanh,
    GeluPythonTanh,
    GeluAccurate,
    /// `0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x²)))`.
    GeluFast,
    /// Exact GELU clipped to [-10, 10].
    Gelu10,
}

const NAMES: [(&str, Act); 9] = [
    ("quick_gelu", Act::QuickGelu),
    ("gelu", Act::Gelu),
    ("gelu_python", Act::GeluPython),
    ("gelu_new", Act::GeluNew),
    ("gelu_pytorch_tanh", Act::GeluPytorchTanh),
    ("gelu_python_tanh", Act::GeluPythonTanh),
    ("gelu_accurate", Act::GeluAccurate),
    ("gelu_fast", Act::GeluFast),
    ("gelu_10", Act::Gelu10),
];

impl Act {
    /// The transformers name.
    pub fn name(self) -> &'static str {
        NAMES.iter().find(|(_, a)| *a == self).map(|(n, _)| *n).unwrap_or("?")
    }

    /// Parse a transformers name; the error lists the supported ones.
    pub fn parse(name: &str) -> Result<Act, String> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, a)| *a).ok_or_else(|| {
            let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            format!("unsupported hidden_act `{name}` (supported: {})", known.join(", "))
        })
    }

    /// The activation of one f32 (the CPU transformer path, `vit.rs`), with
    /// [`super::vit::exp`] so that [`Act::apply_inplace`]'s loops vectorise.
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        use super::vit::exp;
        let erf_gelu = |v: f32| 0.5 * v * (1.0 + candle_core::cpu::erf::erf_f64(v as f64 / std::f64::consts::SQRT_2) as f32);
        match self {
            Act::QuickGelu => v / (1.0 + exp(-1.702 * v)),
            Act::Gelu | Act::GeluPython => erf_gelu(v),
            Act::Gelu10 => erf_gelu(v).clamp(-10.0, 10.0),
            Act::GeluNew | Act::GeluPytorchTanh | Act::GeluPythonTanh | Act::GeluAccurate | Act::GeluFast => {
                let u = 0.797_884_6 * (v + 0.044_715 * v * v * v);
                // 0.5 v (1 + tanh(u)), tanh(u) = 1 - 2 / (e^{2u} + 1)
                0.5 * v * (2.0 - 2.0 / (exp(2.0 * u) + 1.0))
            }
        }
    }

    /// [`Act::apply`] over a slice in place, in parallel (one monomorphic loop per variant).
    pub fn apply_inplace(self, x: &mut [f32]) {
        use rayon::prelude::*;
        fn run(x: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
            x.par_chunks_mut(1 << 14).for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
        }
        match self {
            Act::QuickGelu => run(x, |v| Act::QuickGelu.apply(v)),
            Act::GeluPytorchTanh => run(x, |v| Act::GeluPytorchTanh.apply(v)),
            other => run(x, move |v| other.apply(v)),
        }
    }

    /// Apply elementwise to a tensor (candle's graph: CUDA, f16/bf16, and the reference path).
    pub fn forward(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Act::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702f64)?)?,
            Act::Gelu | Act::GeluPython => x.gelu_erf(),
            // candle's `gelu` is the tanh approximation with sqrt(2/π) (= gelu_new).
            Act::GeluNew | Act::GeluPytorchTanh | Act::GeluPythonTanh | Act::GeluAccurate => x.gelu(),
            Act::GeluFast => {
                let inner = ((x * 0.7978845608)? * ((x.sqr()? * 0.044715)? + 1.0)?)?;
                (x * 0.5)? * (inner.tanh()? + 1.0)?
            }
            Act::Gelu10 => x.gelu_erf()?.clamp(-10f32, 10f32),
        }
    }

    /// The same function as candle's [`candle_nn::Activation`] (for candle's own SigLIP tower),
    /// when candle has it. `gelu_fast`'s constant 0.7978845608 equals sqrt(2/π) to 3e-12, far
    /// below f32 resolution, so it maps to the tanh approximation.
    pub fn candle(self) -> Option<candle_nn::Activation> {
        match self {
            Act::Gelu | Act::GeluPython => Some(candle_nn::Activation::Gelu),
            Act::GeluNew | Act::GeluPytorchTanh | Act::GeluPythonTanh | Act::GeluAccurate | Act::GeluFast => {
                Some(candle_nn::Activation::GeluPytorchTanh)
            }
            Act::QuickGelu | Act::Gelu10 => None,
        }
    }
}

impl TryFrom<String> for Act {
    type Error = String;
    fn try_from(s: String) -> Result<Act, String> {
        Act::parse(&s)
    }
}

impl From<Act> for String {
    fn from(a: Act) -> String {
        a.name().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    const XS: [f32; 12] = [-12.0, -5.5, -3.0, -1.25, -0.5, -0.001, 0.0, 0.3, 1.0, 2.5, 4.0, 11.0];

    /// Values computed by transformers' ACT2FN in PyTorch (float32), for XS.
    fn torch_values(a: Act) -> [f32; 12] {
        let quick = [-1.618_642_1e-8, -0.000_473_036_5, -0.018_071_31, -0.133_065_7, -0.149_611_56, -0.000_499_574_5, 0.0, 0.187_484_15, 0.845_795_75, 2.465_014, 3.995_585, 11.0];
        let erf = [-0.0, -1.639_127_7e-7, -0.004_050_225, -0.132_062_21, -0.154_268_77, -0.000_499_601_07, 0.0, 0.185_373_44, 0.841_344_7, 2.484_475_9, 3.999_873_6, 11.0];
        let tanh = [-0.0, -0.0, -0.003_637_433, -0.132_285_8, -0.154_286, -0.000_499_601_07, 0.0, 0.185_370_94, 0.841_192, 2.484_915_7, 3.999_93, 11.0];
        match a {
            Act::QuickGelu => quick,
            Act::Gelu | Act::GeluPython => erf,
            Act::Gelu10 => {
                let mut v = erf;
                v[11] = 10.0;
                v
            }
            _ => tanh,
        }
    }

    #[test]
    fn formulas_match_transformers() {
        let x = Tensor::new(&XS, &Device::Cpu).unwrap();
        for (name, a) in NAMES {
            assert_eq!(Act::parse(name), Ok(a));
            assert_eq!(a.name(), name);
            let want = torch_values(a);
            // Both a contiguous tensor and a strided view.
            let strided = Tensor::stack(&[&x, &x], 1).unwrap().narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
            for input in [&x, &strided] {
                let got = a.forward(input).unwrap().to_vec1::<f32>().unwrap();
                for (i, (g, w)) in got.iter().zip(want).enumerate() {
                    assert!((g - w).abs() <= 2e-6 + 1e-5 * w.abs(), "{name}({}) = {g}, transformers {w}", XS[i]);
                }
            }
            let mut scalar = XS;
            a.apply_inplace(&mut scalar);
            for (i, (g, w)) in scalar.iter().zip(want).enumerate() {
                assert!((g - w).abs() <= 2e-6 + 1e-5 * w.abs(), "{name}({}) on the CPU path = {g}, transformers {w}", XS[i]);
            }
            if let Some(c) = a.candle() {
                let got = candle_core::Module::forward(&c, &x).unwrap().to_vec1::<f32>().unwrap();
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() <= 2e-6 + 1e-5 * w.abs(), "{name} via candle: {g} vs {w}");
                }
            }
        }
        // f16 input (CUDA runs) goes through the generic ops.
        let y = Act::QuickGelu.forward(&x.to_dtype(DType::F16).unwrap()).unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        assert!((y[8] - 0.845_795_75).abs() < 1e-3);
    }

    #[test]
    fn unknown_names_list_the_supported_ones() {
        let e = Act::parse("swiglu").unwrap_err();
        assert!(e.contains("swiglu") && e.contains("quick_gelu") && e.contains("gelu_pytorch_tanh"), "{e}");
        let e = serde_json::from_str::<Act>("\"relu\"").unwrap_err().to_string();
        assert!(e.contains("relu") && e.contains("supported"), "{e}");
        assert_eq!(serde_json::to_string(&Act::GeluNew).unwrap(), "\"gelu_new\"");
    }
}
