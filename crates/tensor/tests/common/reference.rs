//! Naive, obviously-correct reference implementations (one element at a time, by index
//! arithmetic) that the tests compare the kernels against.

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The multi-index of flat position `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// NumPy's broadcast shape of two shapes (assumed compatible).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
            let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
            if da == 1 {
                db
            } else {
                da
            }
        })
        .collect()
}

/// The element of `x` (of `shape`) read at output multi-index `out_idx` under broadcasting.
pub fn broadcast_read<T: Copy>(x: &[T], shape: &[usize], out_idx: &[usize]) -> T {
    let off = out_idx.len() - shape.len();
    let st = strides(shape);
    let flat: usize = shape.iter().enumerate().map(|(d, &n)| if n == 1 { 0 } else { out_idx[off + d] * st[d] }).sum();
    x[flat]
}

/// `f(a, b)` elementwise with broadcasting.
pub fn broadcast_binary(
    a: &[f64],
    ashape: &[usize],
    b: &[f64],
    bshape: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> (Vec<usize>, Vec<f64>) {
    let out = broadcast_shape(ashape, bshape);
    let n: usize = out.iter().product();
    let v = (0..n)
        .map(|i| {
            let idx = unravel(i, &out);
            f(broadcast_read(a, ashape, &idx), broadcast_read(b, bshape, &idx))
        })
        .collect();
    (out, v)
}

/// Which reduction [`reduce`] computes.
#[derive(Clone, Copy, Debug)]
pub enum Reduction {
    /// Sum.
    Sum,
    /// Maximum; NaN wins.
    Max,
    /// Minimum; NaN wins.
    Min,
}

/// Reduces `axes` (non-negative) of `x`; the result has the keepdims layout.
pub fn reduce(x: &[f64], shape: &[usize], axes: &[usize], op: Reduction) -> Vec<f64> {
    let kept: Vec<usize> = shape.iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
    let n_out: usize = kept.iter().product();
    let mut out: Vec<Option<f64>> = vec![None; n_out];
    let ks = strides(&kept);
    for (i, &v) in x.iter().enumerate() {
        let idx = unravel(i, shape);
        let o: usize = idx.iter().enumerate().map(|(d, &j)| if axes.contains(&d) { 0 } else { j * ks[d] }).sum();
        out[o] = Some(match (out[o], op) {
            (None, _) => v,
            (Some(acc), Reduction::Sum) => acc + v,
            (Some(acc), _) if acc.is_nan() || v.is_nan() => f64::NAN,
            (Some(acc), Reduction::Max) => acc.max(v),
            (Some(acc), Reduction::Min) => acc.min(v),
        });
    }
    out.into_iter().map(|v| v.unwrap_or(0.0)).collect()
}

/// Axes reordered: output axis `i` is input axis `perm[i]`.
pub fn permute(x: &[f64], shape: &[usize], perm: &[usize]) -> Vec<f64> {
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let st = strides(shape);
    (0..x.len())
        .map(|i| {
            let idx = unravel(i, &out);
            x[perm.iter().enumerate().map(|(d, &p)| idx[d] * st[p]).sum::<usize>()]
        })
        .collect()
}

/// `[batch, m, k] @ [batch or 1, k, n]`, by the definition.
pub fn matmul(a: &[f64], b: &[f64], batch: usize, m: usize, k: usize, n: usize, b_shared: bool) -> Vec<f64> {
    let mut out = vec![0.0; batch * m * n];
    for bi in 0..batch {
        let boff = if b_shared { 0 } else { bi * k * n };
        for i in 0..m {
            for j in 0..n {
                out[(bi * m + i) * n + j] = (0..k).map(|p| a[(bi * m + i) * k + p] * b[boff + p * n + j]).sum();
            }
        }
    }
    out
}

/// log_softmax of each row of `cols` elements, in f64 with the max subtracted.
pub fn log_softmax_rows(x: &[f64], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|row| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            row.iter().map(move |v| v - max - lse).collect::<Vec<_>>()
        })
        .collect()
}
