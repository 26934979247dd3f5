//! The alignment heads' linear layers as single autograd nodes on the CPU.
//!
//! Built from candle's tensor operations, `relu(x W^T + b)` is five graph nodes (transpose,
//! matmul, broadcast, add, relu), and candle's backward pass allocates a zeroed gradient for each
//! node's argument and adds into it: for a 1024 x 1024 layer at batch 256 that is, by our count
//! of the passes, about 30 MB of extra memory traffic per layer and step, one of them a strided
//! walk over the transposed weight gradient. `LinearOp` is one node: forward lets `gemm` write
//! `x W^T`, then adds the bias (and applies the ReLU) in one pass over it; backward returns
//! `dx = g W` (only when `x` carries a gradient), `dW = g^T x` (already in PyTorch's `(out, in)`
//! layout) and `db = sum_rows(g)`, with `g` the output gradient masked by `y > 0` (PyTorch's ReLU
//! convention; candle's own takes `x >= 0`, which differs only where a pre-activation is exactly
//! zero).
//!
//! Used for rank-2 f32/f64 inputs on the CPU ([`crate::align::layers::Linear`]); other devices,
//! dtypes and ranks take the tensor-operation path, and the tests check the two agree.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Output rows per rayon task of the bias and ReLU pass.
const ROWS_PER_TASK: usize = 16;

/// `x W^T + b`, then ReLU when `relu`: `x` is `(n, in)` with any strides, `W` `(out, in)`, `b`
/// `(out)`.
pub struct LinearOp {
    pub relu: bool,
}

/// `(rows, cols, row stride, column stride, start offset)` of a rank-2 layout.
fn dims2(l: &Layout, what: &str) -> Result<(usize, usize, isize, isize, usize)> {
    match (l.dims(), l.stride()) {
        ([r, c], [rs, cs]) => Ok((*r, *c, *rs as isize, *cs as isize, l.start_offset())),
        (d, _) => candle_core::bail!("fused linear: {what} has shape {d:?}, expected rank 2"),
    }
}

fn forward<T: WithDType>(x: &[T], xl: &Layout, w: &[T], wl: &Layout, b: &[T], bl: &Layout, relu: bool) -> Result<(Vec<T>, Shape)> {
    let (n, k, x_rs, x_cs, x_off) = dims2(xl, "the input")?;
    let (m, wk, w_rs, w_cs, w_off) = dims2(wl, "the weight")?;
    let b = match bl.contiguous_offsets() {
        Some((lo, hi)) if hi - lo == m => &b[lo..hi],
        _ => candle_core::bail!("fused linear: the bias has shape {:?}, expected a contiguous ({m})", bl.dims()),
    };
    if wk != k {
        candle_core::bail!("fused linear: input ({n}, {k}) against weight ({m}, {wk})");
    }
    let mut y: Vec<T> = vec![T::zero(); n * m];
    if n > 0 && m > 0 && k > 0 {
        // SAFETY: `y` holds the row-major (n, m) output; `x` and `w` are read at the offsets and
        // strides of their layouts, which candle guarantees lie inside their storage.
        unsafe {
            gemm::gemm(
                n,
                m,
                k,
                y.as_mut_ptr(),
                1,
                m as isize,
                false,
                x.as_ptr().add(x_off),
                x_cs,
                x_rs,
                // W^T as the (k, m) right-hand side: its columns are W's rows.
                w.as_ptr().add(w_off),
                w_rs,
                w_cs,
                T::zero(),
                T::one(),
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
    }
    // The bias (and the ReLU) in one pass over the product.
    y.par_chunks_mut(m.max(1) * ROWS_PER_TASK).for_each(|c| {
        for row in c.chunks_mut(m.max(1)) {
            for (v, b) in row.iter_mut().zip(b) {
                *v += *b;
                if relu && !(*v > T::zero()) {
                    *v = T::zero();
                }
            }
        }
    });
    Ok((y, Shape::from((n, m))))
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        if self.relu { "fused-linear-relu" } else { "fused-linear" }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => forward(x, l1, w, l2, b, l3, self.relu).map(|(y, s)| (CpuStorage::F32(y), s)),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => forward(x, l1, w, l2, b, l3, self.relu).map(|(y, s)| (CpuStorage::F64(y), s)),
            _ => candle_core::bail!("fused linear: f32 or f64 inputs of one dtype only (got {:?}, {:?}, {:?})", s1.dtype(), s2.dtype(), s3.dtype()),
        }
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = if self.relu { grad.contiguous()?.apply_op2_no_bwd(y, &ReluMask)? } else { grad.clone() };
        // An input that carries no gradient (a data batch, the Fourier features of fixed
        // buffers) gets none: candle would compute and store it all the same.
        let dx = if x.track_op() { Some(g.matmul(w)?) } else { None };
        let dw = g.t()?.matmul(x)?;
        let db = g.sum(0)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `grad` where `y > 0`, else 0: the ReLU's backward from its output, in one pass.
struct ReluMask;

fn mask<T: WithDType>(g: &[T], gl: &Layout, y: &[T], yl: &Layout) -> Result<Vec<T>> {
    match (gl.contiguous_offsets(), yl.contiguous_offsets()) {
        (Some((g0, g1)), Some((y0, y1))) if g1 - g0 == y1 - y0 => {
            let (g, y) = (&g[g0..g1], &y[y0..y1]);
            let mut out = vec![T::zero(); g.len()];
            out.par_chunks_mut(1 << 14).zip(g.par_chunks(1 << 14).zip(y.par_chunks(1 << 14))).for_each(|(o, (g, y))| {
                for ((o, g), y) in o.iter_mut().zip(g).zip(y) {
                    if *y > T::zero() {
                        *o = *g;
                    }
                }
            });
            Ok(out)
        }
        _ => candle_core::bail!("fused linear: the ReLU mask needs contiguous tensors of one size ({:?}, {:?})", gl.dims(), yl.dims()),
    }
}

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "relu-mask"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = l1.shape().clone();
        match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(y)) => Ok((CpuStorage::F32(mask(g, l1, y, l2)?), shape)),
            (CpuStorage::F64(g), CpuStorage::F64(y)) => Ok((CpuStorage::F64(mask(g, l1, y, l2)?), shape)),
            _ => candle_core::bail!("relu mask: f32 or f64 of one dtype only"),
        }
    }
}
