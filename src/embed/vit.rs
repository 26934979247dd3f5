//! The CPU f32 path of the vision transformers (CLIP and SigLIP towers): plain `Vec<f32>`
//! activations, the products through the `gemm` crate on the rayon pool, attention as one rayon
//! task per (image, head), and fused in-place kernels for the rest. It computes the same function
//! as the candle graph of each model (the path used on CUDA and for f16/bf16), which stays the
//! reference: `tests/encoders_parity.rs` checks both against each other and against
//! transformers' outputs, and the unit tests here check each kernel against a naive version.
//!
//! Why not candle's CPU graph: on 2 cores it ran CLIP ViT-B/16 at ~0.7x PyTorch. The graph adds
//! a pass over the activations for every bias add, residual add, transpose and head split, and
//! runs attention as strided batched products. Here the bias and the residual are folded into
//! the product (`C = residual + bias` first, then `C += X W^T`), Q/K/V are one product read in
//! place with strides, weights are held transposed, softmax and the GELUs use a vectorisable
//! [`exp`], and the layer's scratch buffers are allocated once per batch. The system BLAS
//! (OpenBLAS) was tried for the products and was slower inside the pipeline: its spinning worker
//! threads compete with the rayon pool (benches/README.md).

use super::act::Act;
use candle_core::Tensor;
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// Which implementation runs a transformer's forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// This module's path on the CPU in f32, candle's graph otherwise (CUDA, f16, bf16).
    Auto,
    /// Always candle's graph (the reference this path is tested against).
    Candle,
}

impl Kernels {
    /// Whether this module's path runs on `device` in `dtype`.
    pub fn cpu_path(self, device: &candle_core::Device, dtype: candle_core::DType) -> bool {
        self == Kernels::Auto && device.is_cpu() && dtype == candle_core::DType::F32
    }
}

/// Rows per rayon task for the row-wise kernels.
const ROWS_PER_TASK: usize = 16;

/// `e^x` in f32 without a libm call, so that loops over slices vectorise: Cody-Waite range
/// reduction `x = n ln2 + r` and Cephes' `expf` polynomial on `|r| <= ln2 / 2` (relative error
/// within 2 ulp of the correctly rounded result; checked against `f32::exp` in the tests).
/// Inputs are clamped to [-87, 88], where the result is a normal f32.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// A linear layer `y = x W^T + b` with PyTorch's `weight (out, in)`, stored transposed as
/// `(in, out)`: the `gemm` crate runs the products with few output columns (the attention
/// output and the second MLP layer) 10-20 % faster with row-major right-hand sides.
pub struct Dense {
    /// `(in, out)`, row-major.
    wt: Vec<f32>,
    b: Option<Vec<f32>>,
    pub inp: usize,
    pub out: usize,
}

fn to_vec(t: Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

impl Dense {
    /// From a PyTorch `(out, in)` weight.
    pub fn new(w: &[f32], b: Option<Vec<f32>>, inp: usize, out: usize) -> Dense {
        assert_eq!(w.len(), inp * out, "Dense: weight is not out x in");
        assert!(b.as_ref().is_none_or(|b| b.len() == out), "Dense: bias is not out long");
        // Blocked transpose: a naive one strides through memory and took ~4 % of a ViT-B run.
        const B: usize = 32;
        let mut wt = vec![0f32; inp * out];
        for o0 in (0..out).step_by(B) {
            for i0 in (0..inp).step_by(B) {
                for o in o0..(o0 + B).min(out) {
                    for i in i0..(i0 + B).min(inp) {
                        wt[i * out + o] = w[o * inp + i];
                    }
                }
            }
        }
        Dense { wt, b, inp, out }
    }

    pub fn load(vb: &VarBuilder, inp: usize, out: usize, bias: bool) -> candle_core::Result<Dense> {
        Self::load_stacked(std::slice::from_ref(vb), inp, out, bias)
    }

    /// Several layers with the same input as one (outputs side by side), e.g. Q, K and V.
    pub fn load_stacked(vbs: &[VarBuilder], inp: usize, out_each: usize, bias: bool) -> candle_core::Result<Dense> {
        let (mut w, mut b) = (Vec::with_capacity(vbs.len() * out_each * inp), Vec::with_capacity(vbs.len() * out_each));
        for vb in vbs {
            w.extend(to_vec(vb.get((out_each, inp), "weight")?)?);
            if bias {
                b.extend(to_vec(vb.get(out_each, "bias")?)?);
            }
        }
        Ok(Dense::new(&w, bias.then_some(b), inp, vbs.len() * out_each))
    }

    /// `y (rows, out) = x (rows, in) W^T + b`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * self.out];
        self.forward_into(x, rows, &mut y, false);
        y
    }

    /// `y = x W^T + b`, or `y += x W^T + b` when `accumulate` (the residual connection).
    pub fn forward_into(&self, x: &[f32], rows: usize, y: &mut [f32], accumulate: bool) {
        assert_eq!(x.len(), rows * self.inp, "Dense: input is not rows x in");
        assert_eq!(y.len(), rows * self.out, "Dense: output is not rows x out");
        match &self.b {
            Some(b) => y.par_chunks_mut(self.out * ROWS_PER_TASK).for_each(|c| {
                for row in c.chunks_mut(self.out) {
                    if accumulate {
                        row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                    } else {
                        row.copy_from_slice(b);
                    }
                }
            }),
            None if !accumulate => y.fill(0.0),
            None => {}
        }
        gemm_acc(rows, self.out, self.inp, x, &self.wt, y);
    }
}

/// Row-major `c (m x n) += a (m x k) * b (k x n)` through the `gemm` crate on the rayon pool.
fn gemm_acc(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n, "gemm: buffer sizes do not match {m}x{n}x{k}");
    // SAFETY: the three buffers hold exactly the row-major matrices addressed (checked above).
    unsafe {
        gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, true, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 1.0, 1.0, false, false, false, gemm::Parallelism::Rayon(rayon::current_num_threads()));
    }
}

/// LayerNorm over the last dimension (PyTorch semantics: biased variance, `eps` inside the sqrt).
pub struct Norm {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub eps: f32,
}

impl Norm {
    pub fn load(vb: &VarBuilder, dim: usize, eps: f64) -> candle_core::Result<Norm> {
        Ok(Norm { w: to_vec(vb.get(dim, "weight")?)?, b: to_vec(vb.get(dim, "bias")?)?, eps: eps as f32 })
    }

    fn dim(&self) -> usize {
        self.w.len()
    }

    /// `y = LN(x)` row by row (two-pass mean and variance, as PyTorch's CPU kernel is exact to
    /// f32 rounding).
    pub fn forward_into(&self, x: &[f32], y: &mut [f32]) {
        let d = self.dim();
        y.par_chunks_mut(d * ROWS_PER_TASK).zip(x.par_chunks(d * ROWS_PER_TASK)).for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
                let mean = xr.iter().sum::<f32>() / d as f32;
                let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                let inv = 1.0 / (var + self.eps).sqrt();
                for i in 0..d {
                    yr[i] = (xr[i] - mean) * inv * self.w[i] + self.b[i];
                }
            }
        });
    }

    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; x.len()];
        self.forward_into(x, &mut y);
        y
    }
}

/// Softmax of each row, in place.
fn softmax_rows(s: &mut [f32], n: usize) {
    for row in s.chunks_mut(n) {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|v| *v = exp(*v - max));
        let sum: f32 = row.iter().sum();
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// A raw pointer that rayon tasks may share; each task writes a disjoint region.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used by `attention`, whose tasks write disjoint (image, head) blocks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Multi-head attention core. `q`, `k`, `v` are row-major matrices inside larger buffers:
/// row `i` of image `b` starts at `base + (b * rows_per_image + i) * stride`, head `h` at column
/// `h * head_dim`. Writes `softmax(q k^T * scale) v` into `out (images * q_rows, heads *
/// head_dim)`. One rayon task per (image, head), each a single-threaded `gemm` call pair.
pub struct Attn<'a> {
    pub q: (&'a [f32], usize, usize, usize), // (buffer, offset, stride, rows per image)
    pub k: (&'a [f32], usize, usize, usize),
    pub v: (&'a [f32], usize, usize, usize),
    pub images: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

impl Attn<'_> {
    pub fn run(&self, out: &mut [f32]) {
        let (qn, kn) = (self.q.3, self.k.3);
        let width = self.heads * self.head_dim;
        assert_eq!(out.len(), self.images * qn * width, "attention output size");
        assert_eq!(self.k.3, self.v.3, "keys and values differ in length");
        for (buf, off, stride, rows) in [self.q, self.k, self.v] {
            assert!(self.images == 0 || off + ((self.images * rows - 1) * stride) + width <= buf.len(), "attention input out of bounds");
        }
        let dst = SendPtr(out.as_mut_ptr());
        (0..self.images * self.heads).into_par_iter().for_each_init(
            || vec![0f32; qn * kn],
            |scores, task| {
                let dst = dst;
                let (img, h) = (task / self.heads, task % self.heads);
                let at = |(buf, off, stride, rows): (&[f32], usize, usize, usize)| -> (*const f32, isize) {
                    (buf[off + img * rows * stride + h * self.head_dim..].as_ptr(), stride as isize)
                };
                let (q, qs) = at(self.q);
                let (k, ks) = at(self.k);
                let (v, vs) = at(self.v);
                // SAFETY: every pointer/stride pair addresses rows inside its buffer (checked
                // above); `dst` blocks of different tasks are disjoint (image rows x head cols).
                unsafe {
                    // scores (qn x kn) = scale * q (qn x hd) k^T (hd x kn)
                    gemm::gemm(qn, kn, self.head_dim, scores.as_mut_ptr(), 1, kn as isize, false, q, 1, qs, k, ks, 1, 0.0, self.scale, false, false, false, gemm::Parallelism::None);
                    softmax_rows(scores, kn);
                    // out block (qn x hd, row stride = width) = scores (qn x kn) v (kn x hd)
                    let o = dst.0.add(img * qn * width + h * self.head_dim);
                    gemm::gemm(qn, self.head_dim, kn, o, 1, width as isize, false, scores.as_ptr(), 1, kn as isize, v, 1, vs, 0.0, 1.0, false, false, false, gemm::Parallelism::None);
                }
            },
        );
    }
}

/// One pre-norm transformer encoder layer (CLIP and SigLIP share it):
/// `x += out(attn(ln1(x)))`, `x += fc2(act(fc1(ln2(x))))`.
pub struct Layer {
    pub ln1: Norm,
    /// Q, K and V stacked: `(3 * hidden, hidden)`.
    pub qkv: Dense,
    pub out: Dense,
    pub ln2: Norm,
    pub fc1: Dense,
    pub fc2: Dense,
}

impl Layer {
    /// Load the HF tensor names `layer_norm1`, `self_attn.{q,k,v,out}_proj`, `layer_norm2`,
    /// `mlp.fc1`, `mlp.fc2` under `vb`.
    pub fn load(vb: &VarBuilder, hidden: usize, intermediate: usize, eps: f64) -> candle_core::Result<Layer> {
        let a = vb.pp("self_attn");
        Ok(Layer {
            ln1: Norm::load(&vb.pp("layer_norm1"), hidden, eps)?,
            qkv: Dense::load_stacked(&[a.pp("q_proj"), a.pp("k_proj"), a.pp("v_proj")], hidden, hidden, true)?,
            out: Dense::load(&a.pp("out_proj"), hidden, hidden, true)?,
            ln2: Norm::load(&vb.pp("layer_norm2"), hidden, eps)?,
            fc1: Dense::load(&vb.pp("mlp.fc1"), hidden, intermediate, true)?,
            fc2: Dense::load(&vb.pp("mlp.fc2"), intermediate, hidden, true)?,
        })
    }
}

/// The encoder stack: layers, head count and activation.
pub struct Stack {
    pub layers: Vec<Layer>,
    pub heads: usize,
    pub act: Act,
}

impl Stack {
    /// Run every layer over `x (images * seq, hidden)` in place.
    pub fn forward(&self, x: &mut [f32], images: usize, seq: usize) {
        let Some(first) = self.layers.first() else { return };
        let hidden = first.qkv.inp;
        let rows = images * seq;
        assert_eq!(x.len(), rows * hidden, "encoder input is not (images * seq) x hidden");
        let hd = hidden / self.heads;
        let mut y = vec![0f32; rows * hidden];
        let mut qkv = vec![0f32; rows * 3 * hidden];
        let mut mid = vec![0f32; rows * first.fc1.out];
        for l in &self.layers {
            l.ln1.forward_into(x, &mut y);
            l.qkv.forward_into(&y, rows, &mut qkv, false);
            let stride = 3 * hidden;
            Attn {
                q: (&qkv, 0, stride, seq),
                k: (&qkv, hidden, stride, seq),
                v: (&qkv, 2 * hidden, stride, seq),
                images,
                heads: self.heads,
                head_dim: hd,
                scale: (hd as f32).powf(-0.5),
            }
            .run(&mut y);
            l.out.forward_into(&y, rows, x, true);
            l.ln2.forward_into(x, &mut y);
            l.fc1.forward_into(&y, rows, &mut mid, false);
            self.act.apply_inplace(&mut mid);
            l.fc2.forward_into(&mid, rows, x, true);
        }
    }
}

/// Non-overlapping patch embedding (a Conv2d with `stride = kernel = patch`) as one product:
/// `pixels (images, 3, size, size)` to `(images * patches, hidden)`, patches in row-major
/// order. `conv` holds the conv weight flattened to `(hidden, 3 * patch * patch)`.
pub fn patch_embed(pixels: &[f32], images: usize, size: usize, patch: usize, conv: &Dense) -> Vec<f32> {
    let g = size / patch;
    let cols = 3 * patch * patch;
    assert_eq!(conv.inp, cols, "patch embedding weight is not hidden x (3 * patch^2)");
    assert_eq!(pixels.len(), images * 3 * size * size, "pixels are not images x 3 x size x size");
    let mut im2col = vec![0f32; images * g * g * cols];
    im2col.par_chunks_mut(cols).enumerate().for_each(|(r, dst)| {
        let (img, p) = (r / (g * g), r % (g * g));
        let (py, px) = (p / g, p % g);
        for c in 0..3 {
            for dy in 0..patch {
                let src = img * 3 * size * size + c * size * size + (py * patch + dy) * size + px * patch;
                let o = c * patch * patch + dy * patch;
                dst[o..o + patch].copy_from_slice(&pixels[src..src + patch]);
            }
        }
    });
    conv.forward(&im2col, images * g * g)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x W^T + b` with `w (out, in)`.
    fn naive_linear(x: &[f32], rows: usize, w: &[f32], b: Option<&[f32]>, inp: usize, out: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * out];
        for r in 0..rows {
            for o in 0..out {
                let mut s = b.map_or(0.0, |b| b[o]);
                for i in 0..inp {
                    s += x[r * inp + i] * w[o * inp + i];
                }
                y[r * out + o] = s;
            }
        }
        y
    }

    fn seq(n: usize, f: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + 1.0) * f).sin()).collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn dense_with_bias_and_residual_matches_naive() {
        let (w, b) = (seq(6 * 4, 0.3), seq(6, 0.7));
        let d = Dense::new(&w, Some(b.clone()), 4, 6);
        let x = seq(5 * 4, 0.9);
        let want = naive_linear(&x, 5, &w, Some(&b), 4, 6);
        close(&d.forward(&x, 5), &want, 1e-5);
        let mut acc = seq(5 * 6, 0.2);
        let base = acc.clone();
        d.forward_into(&x, 5, &mut acc, true);
        let want_acc: Vec<f32> = want.iter().zip(&base).map(|(a, b)| a + b).collect();
        close(&acc, &want_acc, 1e-5);
        close(&Dense::new(&w, None, 4, 6).forward(&x, 5), &naive_linear(&x, 5, &w, None, 4, 6), 1e-5);
    }

    #[test]
    fn layer_norm_matches_definition() {
        let n = Norm { w: seq(8, 0.5), b: seq(8, 0.25), eps: 1e-5 };
        let x = seq(3 * 8, 1.3);
        let y = n.forward(&x);
        for r in 0..3 {
            let xr = &x[r * 8..(r + 1) * 8];
            let m = xr.iter().sum::<f32>() / 8.0;
            let v = xr.iter().map(|a| (a - m).powi(2)).sum::<f32>() / 8.0;
            for i in 0..8 {
                let want = (xr[i] - m) / (v + 1e-5).sqrt() * n.w[i] + n.b[i];
                assert!((y[r * 8 + i] - want).abs() < 1e-5);
            }
        }
    }

    /// Attention over packed QKV rows against the textbook definition, two images, two heads.
    #[test]
    fn attention_matches_naive() {
        let (images, seq_len, heads, hd) = (2, 5, 2, 3);
        let hidden = heads * hd;
        let qkv = seq(images * seq_len * 3 * hidden, 0.17);
        let mut out = vec![0f32; images * seq_len * hidden];
        let stride = 3 * hidden;
        let scale = (hd as f32).powf(-0.5);
        Attn { q: (&qkv, 0, stride, seq_len), k: (&qkv, hidden, stride, seq_len), v: (&qkv, 2 * hidden, stride, seq_len), images, heads, head_dim: hd, scale }.run(&mut out);
        for img in 0..images {
            for h in 0..heads {
                let at = |r: usize, part: usize, c: usize| qkv[(img * seq_len + r) * stride + part * hidden + h * hd + c];
                for i in 0..seq_len {
                    let s: Vec<f32> = (0..seq_len).map(|j| (0..hd).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f32>() * scale).collect();
                    let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = s.iter().map(|v| (v - m).exp()).collect();
                    let z: f32 = e.iter().sum();
                    for c in 0..hd {
                        let want: f32 = (0..seq_len).map(|j| e[j] / z * at(j, 2, c)).sum();
                        let got = out[(img * seq_len + i) * hidden + h * hd + c];
                        assert!((got - want).abs() < 1e-5, "img {img} head {h} row {i} col {c}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37 && exp(1000.0).is_finite());
    }

    #[test]
    fn patch_embedding_is_the_strided_convolution() {
        let (size, patch, hidden) = (4, 2, 3);
        let (w, b) = (seq(hidden * 3 * patch * patch, 0.4), seq(hidden, 0.6));
        let conv = Dense::new(&w, Some(b.clone()), 3 * patch * patch, hidden);
        let px = seq(2 * 3 * size * size, 0.05);
        let y = patch_embed(&px, 2, size, patch, &conv);
        let g = size / patch;
        for img in 0..2 {
            for py in 0..g {
                for pxi in 0..g {
                    for o in 0..hidden {
                        let mut s = b[o];
                        for c in 0..3 {
                            for dy in 0..patch {
                                for dx in 0..patch {
                                    s += w[o * 12 + c * 4 + dy * 2 + dx] * px[img * 48 + c * 16 + (py * 2 + dy) * 4 + pxi * 2 + dx];
                                }
                            }
                        }
                        let got = y[((img * g + py) * g + pxi) * hidden + o];
                        assert!((got - s).abs() < 1e-5);
                    }
                }
            }
        }
    }
}
