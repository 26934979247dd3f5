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
//! zero). The backward works on the operands' CPU storage: one pass masks `g`, one sums its
//! rows, and `gemm` writes `dx` and `dW` (see [`product`] for how the products are split over
//! threads).
//!
//! Used for rank-2 f32/f64 inputs on the CPU ([`crate::align::layers::Linear`]); other devices,
//! dtypes and ranks take the tensor-operation path, and the tests check the two agree.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor, WithDType};
use rayon::prelude::*;

/// Output rows per rayon task of the bias and ReLU pass.
const ROWS_PER_TASK: usize = 16;

/// Columns per rayon task of the bias gradient's row sums.
const SUM_COLS: usize = 256;

/// Fewest output rows or columns one product's part takes (see [`product`]).
const MIN_SPLIT: usize = 16;

/// `x W^T + b`, then ReLU when `relu`: `x` is `(n, in)` with any strides, `W` `(out, in)`, `b`
/// `(out)`.
pub struct LinearOp {
    pub relu: bool,
}

/// A strided rank-2 operand of a product: its element `(i, j)` is at `ptr + i rs + j cs`.
#[derive(Clone, Copy)]
struct Operand<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

// SAFETY: an `Operand` is only read, and only while the storage it points into is borrowed by
// the call that made it (`product` returns before that borrow ends).
unsafe impl<T> Send for Operand<T> {}
unsafe impl<T> Sync for Operand<T> {}

impl<T> Operand<T> {
    /// The operand of a rank-2 layout over `data`, with its rows and columns.
    fn of(data: &[T], l: &Layout, what: &str) -> Result<(usize, usize, Operand<T>)> {
        match (l.dims(), l.stride()) {
            // SAFETY: candle guarantees a layout's elements lie inside its storage.
            ([r, c], [rs, cs]) => Ok((*r, *c, Operand { ptr: unsafe { data.as_ptr().add(l.start_offset()) }, rs: *rs as isize, cs: *cs as isize })),
            (d, _) => candle_core::bail!("fused linear: {what} has shape {d:?}, expected rank 2"),
        }
    }

    fn t(self) -> Operand<T> {
        Operand { ptr: self.ptr, rs: self.cs, cs: self.rs }
    }
}

/// Along which side of the output [`product`] splits the work.
#[derive(Clone, Copy, PartialEq)]
enum Split {
    Rows,
    Cols,
}

/// The row-major `(r, c)` product `a b` of an `(r, k)` and a `(k, c)` operand, computed as one
/// single-threaded `gemm` call per rayon thread over a slice of the output's rows or columns.
///
/// `gemm`'s own rayon parallelism splits these products less well: on the 2-core build machine
/// (`benches/README.md`, "Geo-alignment training throughput") a layer's forward product `x W^T`
/// at batch 256 ran at 207-238 GFLOP/s through it and at 300-330 split by output columns; the
/// backward products gain less (`dW` split by rows, `dx` by columns). A part is never narrower
/// than [`MIN_SPLIT`], so small products run as one call.
fn product<T: WithDType>(r: usize, c: usize, k: usize, a: Operand<T>, b: Operand<T>, split: Split) -> Vec<T> {
    if r == 0 || c == 0 || k == 0 {
        return vec![T::zero(); r * c];
    }
    // Not zeroed first: `gemm` without `read_dst` stores every element of its output.
    let mut out: Vec<T> = Vec::with_capacity(r * c);
    let side = if split == Split::Rows { r } else { c };
    let parts = rayon::current_num_threads().min(side / MIN_SPLIT).max(1);
    let dst = out.as_mut_ptr() as usize;
    (0..parts).into_par_iter().for_each(move |p| {
        let (a, b) = (a, b);
        let (lo, hi) = (side * p / parts, side * (p + 1) / parts);
        // SAFETY: part `p` writes only output rows (or columns) `lo..hi`, disjoint from every
        // other part's, of the `r * c` buffer that outlives the loop; `a` and `b` are read at
        // offsets inside their storage (rows `lo..hi` of `a`, or columns `lo..hi` of `b`).
        unsafe {
            let (m, n, dst, a_ptr, b_ptr) = match split {
                Split::Rows => (hi - lo, c, (dst as *mut T).add(lo * c), a.ptr.offset(lo as isize * a.rs), b.ptr),
                Split::Cols => (r, hi - lo, (dst as *mut T).add(lo), a.ptr, b.ptr.offset(lo as isize * b.cs)),
            };
            gemm::gemm(m, n, k, dst, 1, c as isize, false, a_ptr, a.cs, a.rs, b_ptr, b.cs, b.rs, T::zero(), T::one(), false, false, false, gemm::Parallelism::None);
        }
    });
    // SAFETY: the parts' slices `lo..hi` cover `0..side`, so every one of the `r * c` elements
    // (allocated above) has been written.
    unsafe { out.set_len(r * c) };
    out
}

fn forward<T: WithDType>(x: &[T], xl: &Layout, w: &[T], wl: &Layout, b: &[T], bl: &Layout, relu: bool) -> Result<(Vec<T>, Shape)> {
    let (n, k, x) = Operand::of(x, xl, "the input")?;
    let (m, wk, w) = Operand::of(w, wl, "the weight")?;
    let b = match bl.contiguous_offsets() {
        Some((lo, hi)) if hi - lo == m => &b[lo..hi],
        _ => candle_core::bail!("fused linear: the bias has shape {:?}, expected a contiguous ({m})", bl.dims()),
    };
    if wk != k {
        candle_core::bail!("fused linear: input ({n}, {k}) against weight ({m}, {wk})");
    }
    // W^T as the (k, m) right-hand side: its columns are W's rows.
    let mut y = product(n, m, k, x, w.t(), Split::Cols);
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

/// The elements of a contiguous `(rows, cols)` tensor, row-major.
fn row_major<'a, T>((v, l): (&'a [T], &Layout), (rows, cols): (usize, usize), what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((lo, hi)) if l.dims() == [rows, cols] => Ok(&v[lo..hi]),
        _ => candle_core::bail!("fused linear: {what} has shape {:?}, expected a contiguous ({rows}, {cols})", l.dims()),
    }
}

/// `(dx, dW, db)` of `y = act(x W^T + b)` from the row-major output gradient `g`: `g` is masked
/// by `y > 0` when `relu`, then `dx = g W` (only when `need_dx`), `dW = g^T x`, `db = sum_rows(g)`.
fn backward<T: WithDType>(x: (&[T], &Layout), w: (&[T], &Layout), y: (&[T], &Layout), g: (&[T], &Layout), relu: bool, need_dx: bool) -> Result<(Option<Vec<T>>, Vec<T>, Vec<T>)> {
    let (n, k, xo) = Operand::of(x.0, x.1, "the input")?;
    let (m, _, wo) = Operand::of(w.0, w.1, "the weight")?;
    let dense = row_major(g, (n, m), "the output gradient")?;
    // The gradient that passes the ReLU.
    let masked: Option<Vec<T>> = if relu {
        let yv = row_major(y, (n, m), "the output")?;
        let mut out = vec![T::zero(); n * m];
        let chunk = m.max(1) * ROWS_PER_TASK;
        out.par_chunks_mut(chunk).zip(dense.par_chunks(chunk).zip(yv.par_chunks(chunk))).for_each(|(o, (g, y))| {
            for ((o, g), y) in o.iter_mut().zip(g).zip(y) {
                *o = if *y > T::zero() { *g } else { T::zero() };
            }
        });
        Some(out)
    } else {
        None
    };
    let gv: &[T] = masked.as_deref().unwrap_or(dense);
    let gop = Operand { ptr: gv.as_ptr(), rs: m as isize, cs: 1 };
    // Column sums, rows in order, over blocks of columns in parallel.
    let mut db = vec![T::zero(); m];
    db.par_chunks_mut(SUM_COLS).enumerate().for_each(|(t, out)| {
        for row in gv.chunks(m.max(1)) {
            for (o, v) in out.iter_mut().zip(&row[t * SUM_COLS..]) {
                *o += *v;
            }
        }
    });
    let dw = product(m, k, n, gop.t(), xo, Split::Rows);
    let dx = need_dx.then(|| product(n, k, m, gop, wo, Split::Cols));
    Ok((dx, dw, db))
}

/// The CPU slice of a tensor's storage, for [`LinearOp::bwd`].
fn cpu<'a, T: WithDType>(s: &'a Storage, what: &str) -> Result<&'a [T]> {
    match s {
        Storage::Cpu(c) => c.as_slice::<T>(),
        _ => candle_core::bail!("fused linear: {what} is not on the CPU"),
    }
}

impl LinearOp {
    fn bwd_typed<T: WithDType>(&self, x: &Tensor, w: &Tensor, y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (ys, yl) = y.storage_and_layout();
        // candle's accumulated gradients are contiguous already (then this is a reference count).
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (xv, wv, yv, gv) = (cpu::<T>(&xs, "the input")?, cpu::<T>(&ws, "the weight")?, cpu::<T>(&ys, "the output")?, cpu::<T>(&gs, "the output gradient")?);
        // An input that carries no gradient (a data batch, the Fourier features of fixed
        // buffers) gets none: candle would compute and store it all the same.
        let (dx, dw, db) = backward((xv, xl), (wv, wl), (yv, yl), (gv, gl), self.relu, x.track_op())?;
        let dx = dx.map(|v| Tensor::from_vec(v, xl.dims(), &Device::Cpu)).transpose()?;
        Ok((dx, Some(Tensor::from_vec(dw, wl.dims(), &Device::Cpu)?), Some(Tensor::from_vec(db, w.dim(0)?, &Device::Cpu)?)))
    }
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

    /// The gradients straight from the operands' CPU storage: `gemm` writes `dx` and `dW` in
    /// place, and one pass each masks `g` and sums its rows, instead of candle's matmul,
    /// transpose and row-sum nodes.
    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match w.dtype() {
            candle_core::DType::F32 => self.bwd_typed::<f32>(x, w, y, grad),
            candle_core::DType::F64 => self.bwd_typed::<f64>(x, w, y, grad),
            d => candle_core::bail!("fused linear: f32 or f64 only (got {d:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strided output gradient (candle's own backward always hands over a contiguous one, so
    /// the integration tests cannot reach this) is made contiguous first: the same gradient
    /// stored transposed gives the same `dx`, `dW` and `db`, with and without the ReLU.
    #[test]
    fn a_strided_output_gradient_gives_the_same_gradients() {
        let (n, k, m) = (5usize, 4usize, 3usize);
        let val = |i: usize, s: f64| ((i * 37 % 11) as f64 - 5.0) * s;
        let t = |v: Vec<f64>, shape: (usize, usize)| Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        // A variable input, so that dx is computed too.
        let x = candle_core::Var::from_tensor(&t((0..n * k).map(|i| val(i, 0.3)).collect(), (n, k))).unwrap();
        let w = t((0..m * k).map(|i| val(i + 3, 0.2)).collect(), (m, k));
        let b = t(vec![0.0; m], (1, m)).flatten_all().unwrap();
        let y = t((0..n * m).map(|i| val(i + 7, 1.0)).collect(), (n, m));
        let g: Vec<f64> = (0..n * m).map(|i| val(i + 1, 0.5)).collect();
        let dense = t(g.clone(), (n, m));
        // The same (n, m) gradient, stored as its (m, n) transpose.
        let strided = t((0..m * n).map(|p| g[(p % n) * m + p / n]).collect(), (m, n)).t().unwrap();
        assert!(!strided.is_contiguous());
        let flat = |o: Option<Tensor>| o.unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for relu in [false, true] {
            let op = LinearOp { relu };
            let (ax, aw, ab) = op.bwd(x.as_tensor(), &w, &b, &y, &dense).unwrap();
            let (bx, bw, bb) = op.bwd(x.as_tensor(), &w, &b, &y, &strided).unwrap();
            let db = flat(ab);
            assert_eq!((flat(ax), flat(aw), &db), (flat(bx), flat(bw), &flat(bb)), "relu={relu}");
            // db against a direct sum, so that the comparison above cannot pass on two wrong answers.
            let want: Vec<f64> = (0..m).map(|j| (0..n).filter(|&i| !relu || val(i * m + j + 7, 1.0) > 0.0).map(|i| g[i * m + j]).sum()).collect();
            assert_eq!(db, want, "relu={relu}");
        }
    }
}
