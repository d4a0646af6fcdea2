//! The inner loops of the batch-norm CPU kernels (cpu.rs), each over a block of `[rows, c]`
//! rows, as [`IsaKernel`]s: compiled for AVX-512, AVX2 and any CPU and chosen at run time
//! (the default x86-64 target has only SSE2, four f32 lanes). Each writes its output slice
//! in full, once, so the outputs need no zeroing. They add, subtract, multiply and divide
//! in the order the formulas in cpu.rs state (no fused multiply-add), so every version
//! gives the same bits.

use crate::utilities::isa::IsaKernel;
use crate::FloatElement;
use std::mem::MaybeUninit;

/// ReLU as the elementwise `relu` computes it: `v < 0` rather than `v > 0`, so NaN passes.
#[inline(always)]
fn relu<T: FloatElement>(v: T) -> T {
    if v < T::zero() {
        T::zero()
    } else {
        v
    }
}

/// ReLU's gradient as the elementwise `relu`'s rule computes it, `dy * (y > 0)` with the
/// mask a 1 or 0 of the element type, so the fused and unfused paths agree bit for bit.
#[inline(always)]
fn relu_grad<T: FloatElement>(dy: T, y: T) -> T {
    dy * if y > T::zero() { T::one() } else { T::zero() }
}

/// One block's statistics, two-pass while it sits in cache: `mean = sum(x) / rows`, then
/// `m2 = sum((x - mean)^2)`, per channel (`mean.len()` of them).
pub(super) struct BlockMoments<'a, T> {
    pub(super) x: &'a [T],
    pub(super) mean: &'a mut [T],
    pub(super) m2: &'a mut [T],
}

impl<T: FloatElement> IsaKernel for BlockMoments<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let c = self.mean.len();
        let n = <T as num_traits::NumCast>::from(self.x.len() / c).expect("a row count converts to a float");
        // The sum goes through `m2`, which is overwritten below.
        self.m2.fill(T::zero());
        for row in self.x.chunks_exact(c) {
            for (a, &v) in self.m2.iter_mut().zip(row) {
                *a = *a + v;
            }
        }
        for (m, &s) in self.mean.iter_mut().zip(self.m2.iter()) {
            *m = s / n;
        }
        self.m2.fill(T::zero());
        for row in self.x.chunks_exact(c) {
            for ((a, &v), &m) in self.m2.iter_mut().zip(row).zip(self.mean.iter()) {
                let d = v - m;
                *a = *a + d * d;
            }
        }
    }
}

/// What the forward pass applies after `bn(x)`; `AddRelu` holds the residual rows that
/// match the block's input rows.
#[derive(Clone, Copy)]
pub(crate) enum Epilogue<'a, T> {
    Identity,
    Relu,
    AddRelu(&'a [T]),
}

/// The forward output of a block: `y = (x - mean) * scale + shift`, then the epilogue
/// (`relu(y)`, or `relu(residual + y)`: the order in which the unfused `Add` sums them).
pub(crate) struct Normalize<'a, T> {
    pub(crate) x: &'a [T],
    pub(crate) epilogue: Epilogue<'a, T>,
    pub(crate) mean: &'a [T],
    pub(crate) scale: &'a [T],
    pub(crate) shift: &'a [T],
    pub(crate) dst: &'a mut [MaybeUninit<T>],
}

impl<T: FloatElement> IsaKernel for Normalize<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let c = self.mean.len();
        let affine = || self.mean.iter().zip(self.scale).zip(self.shift);
        let rows = self.dst.chunks_exact_mut(c).zip(self.x.chunks_exact(c));
        // One loop per epilogue, so each inner loop is branch-free.
        match self.epilogue {
            Epilogue::Identity => {
                for (out, xr) in rows {
                    for ((o, &v), ((&m, &sc), &sh)) in out.iter_mut().zip(xr).zip(affine()) {
                        o.write((v - m) * sc + sh);
                    }
                }
            }
            Epilogue::Relu => {
                for (out, xr) in rows {
                    for ((o, &v), ((&m, &sc), &sh)) in out.iter_mut().zip(xr).zip(affine()) {
                        o.write(relu((v - m) * sc + sh));
                    }
                }
            }
            Epilogue::AddRelu(res) => {
                for ((out, xr), rr) in rows.zip(res.chunks_exact(c)) {
                    for (((o, &v), &rv), ((&m, &sc), &sh)) in out.iter_mut().zip(xr).zip(rr).zip(affine()) {
                        o.write(relu(rv + ((v - m) * sc + sh)));
                    }
                }
            }
        }
    }
}

/// One block of the backward reduction: `acc[..c] = sum(g)` and `acc[c..] = sum(g * (x -
/// mean))`, from zero, where `g = dy`, or `dy * (y > 0)` when the ReLU's output `y` is
/// given; with `g_out` (the `AddRelu` epilogue, whose residual gradient is `g`) `g` is also
/// written there, so that the `d_x` pass reads `g` instead of `dy` and `y`.
pub(super) struct GradSums<'a, T> {
    pub(super) x: &'a [T],
    pub(super) dy: &'a [T],
    pub(super) y: Option<&'a [T]>,
    pub(super) mean: &'a [T],
    pub(super) acc: &'a mut [T],
    pub(super) g_out: Option<&'a mut [MaybeUninit<T>]>,
}

impl<T: FloatElement> IsaKernel for GradSums<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let c = self.mean.len();
        self.acc.fill(T::zero());
        let (sum_g, sum_gx) = self.acc.split_at_mut(c);
        let inputs = self.x.chunks_exact(c).zip(self.dy.chunks_exact(c));
        match (self.y, self.g_out) {
            (None, _) => {
                for (xr, dyr) in inputs {
                    let sums = sum_g.iter_mut().zip(sum_gx.iter_mut());
                    for (((a, b), &d), (&v, &m)) in sums.zip(dyr).zip(xr.iter().zip(self.mean)) {
                        *a = *a + d;
                        *b = *b + d * (v - m);
                    }
                }
            }
            (Some(y), None) => {
                for ((xr, dyr), yr) in inputs.zip(y.chunks_exact(c)) {
                    let sums = sum_g.iter_mut().zip(sum_gx.iter_mut());
                    for (((a, b), (&d, &yv)), (&v, &m)) in sums.zip(dyr.iter().zip(yr)).zip(xr.iter().zip(self.mean)) {
                        let d = relu_grad(d, yv);
                        *a = *a + d;
                        *b = *b + d * (v - m);
                    }
                }
            }
            (Some(y), Some(g_out)) => {
                for (((xr, dyr), yr), gr) in inputs.zip(y.chunks_exact(c)).zip(g_out.chunks_exact_mut(c)) {
                    let sums = sum_g.iter_mut().zip(sum_gx.iter_mut()).zip(gr.iter_mut());
                    for ((((a, b), g), (&d, &yv)), (&v, &m)) in
                        sums.zip(dyr.iter().zip(yr)).zip(xr.iter().zip(self.mean))
                    {
                        let d = relu_grad(d, yv);
                        g.write(d);
                        *a = *a + d;
                        *b = *b + d * (v - m);
                    }
                }
            }
        }
    }
}

/// `d_x` of a block: `k_dy * g + k_x * (x - mean) + k_0` per channel, where `g` is `dy`
/// masked by `y > 0` when the ReLU's output `y` is given, else `dy` as it is (the plain
/// output gradient, or the masked one that [`GradSums`] wrote).
pub(crate) struct GradInput<'a, T> {
    pub(crate) x: &'a [T],
    pub(crate) dy: &'a [T],
    pub(crate) y: Option<&'a [T]>,
    pub(crate) mean: &'a [T],
    pub(crate) k_dy: &'a [T],
    pub(crate) k_x: &'a [T],
    pub(crate) k_0: &'a [T],
    pub(crate) dst: &'a mut [MaybeUninit<T>],
}

impl<T: FloatElement> IsaKernel for GradInput<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let c = self.mean.len();
        let coefs = || self.k_dy.iter().zip(self.k_x).zip(self.k_0).zip(self.mean);
        let rows = self.dst.chunks_exact_mut(c).zip(self.x.chunks_exact(c).zip(self.dy.chunks_exact(c)));
        match self.y {
            None => {
                for (out, (xr, dyr)) in rows {
                    for (((o, &d), &v), (((&kd, &kx), &k0), &m)) in out.iter_mut().zip(dyr).zip(xr).zip(coefs()) {
                        o.write(kd * d + kx * (v - m) + k0);
                    }
                }
            }
            Some(y) => {
                for ((out, (xr, dyr)), yr) in rows.zip(y.chunks_exact(c)) {
                    let inputs = dyr.iter().zip(yr).zip(xr);
                    for ((o, ((&d, &yv), &v)), (((&kd, &kx), &k0), &m)) in out.iter_mut().zip(inputs).zip(coefs()) {
                        o.write(kd * relu_grad(d, yv) + kx * (v - m) + k0);
                    }
                }
            }
        }
    }
}
