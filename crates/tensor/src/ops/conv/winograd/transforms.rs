//! The transforms of Winograd's minimal filtering algorithms F(2x2,3x3) and F(4x4,3x3)
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! An output tile `Y` (`m x m`) of a 3x3 correlation of an input tile `d`
//! (`(m + 2) x (m + 2)`) with a kernel `g` is `Y = A^T [(G g G^T) * (B^T d B)] A`, `*`
//! elementwise. Each 2-D transform is a 1-D transform applied to the columns, then to the
//! rows; the 1-D transforms are written out term by term (a matrix product would multiply
//! by the zeros and ones of `B`, `G` and `A` too). Every value here is a block of
//! [`LANES`] channels of one pixel: NHWC keeps a pixel's channels adjacent, and the
//! transforms treat channels alike, so each term is one vector instruction.

use crate::FloatElement;

/// Channels per block: 16 f32 are one AVX-512 register, or two AVX ones.
pub(super) const LANES: usize = 16;

/// One pixel's block of [`LANES`] channels.
pub(super) type Lane<T> = [T; LANES];

/// Input tile side of the largest variant (F(4x4,3x3)): fixed-size scratch fits both.
pub(super) const MAX_ALPHA: usize = 6;

/// A Winograd variant F(m x m, 3x3): its tile sizes and its three 1-D transforms. The
/// transforms read and write the first `ALPHA` (or `M`) entries of fixed-size arrays.
pub(super) trait Variant {
    /// Output tile side `m`.
    const M: usize;
    /// Input tile side `m + 2`.
    const ALPHA: usize;
    /// `B^T d`: `ALPHA` input values to `ALPHA` transformed ones.
    fn input<T: FloatElement>(d: &[Lane<T>; MAX_ALPHA]) -> [Lane<T>; MAX_ALPHA];
    /// `A^T v`: `ALPHA` products to `M` outputs.
    fn output<T: FloatElement>(v: &[Lane<T>; MAX_ALPHA]) -> [Lane<T>; MAX_ALPHA];
    /// `G g`: 3 kernel taps to `ALPHA` transformed ones (in f64, rounded once at the end).
    fn kernel(g: [f64; 3]) -> [f64; MAX_ALPHA];
}

/// F(2x2,3x3): 16 products per 4 outputs (direct: 36).
pub(super) struct F2;

/// F(4x4,3x3): 36 products per 16 outputs (direct: 144), with larger rounding error.
pub(super) struct F4;

/// `f(i)` for every lane.
#[inline(always)]
fn lanes<T: Copy>(f: impl Fn(usize) -> T) -> Lane<T> {
    std::array::from_fn(f)
}

/// The array with its first entries set from `values`, zeros after.
#[inline(always)]
fn padded<T: FloatElement, const N: usize>(values: [Lane<T>; N]) -> [Lane<T>; MAX_ALPHA] {
    let mut out = [[T::zero(); LANES]; MAX_ALPHA];
    out[..N].copy_from_slice(&values);
    out
}

impl Variant for F2 {
    const M: usize = 2;
    const ALPHA: usize = 4;

    #[inline(always)]
    fn input<T: FloatElement>(d: &[Lane<T>; MAX_ALPHA]) -> [Lane<T>; MAX_ALPHA] {
        let [d0, d1, d2, d3, ..] = d;
        padded([lanes(|i| d0[i] - d2[i]), lanes(|i| d1[i] + d2[i]), lanes(|i| d2[i] - d1[i]), lanes(|i| d1[i] - d3[i])])
    }

    #[inline(always)]
    fn output<T: FloatElement>(v: &[Lane<T>; MAX_ALPHA]) -> [Lane<T>; MAX_ALPHA] {
        let [v0, v1, v2, v3, ..] = v;
        padded([lanes(|i| v0[i] + v1[i] + v2[i]), lanes(|i| v1[i] - v2[i] - v3[i])])
    }

    fn kernel([g0, g1, g2]: [f64; 3]) -> [f64; MAX_ALPHA] {
        [g0, (g0 + g1 + g2) / 2.0, (g0 - g1 + g2) / 2.0, g2, 0.0, 0.0]
    }
}

impl Variant for F4 {
    const M: usize = 4;
    const ALPHA: usize = 6;

    #[inline(always)]
    fn input<T: FloatElement>(d: &[Lane<T>; MAX_ALPHA]) -> [Lane<T>; MAX_ALPHA] {
        let [d0, d1, d2, d3, d4, d5] = d;
        let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
        // Shared terms, as in Lavin & Gray: rows 1-2 and 3-4 differ in the sign of one pair.
        let a = lanes(|i| d4[i] - four * d2[i]);
        let b = lanes(|i| d3[i] - four * d1[i]);
        let c = lanes(|i| d4[i] - d2[i]);
        let e = lanes(|i| two * (d3[i] - d1[i]));
        padded([
            lanes(|i| four * d0[i] - five * d2[i] + d4[i]),
            lanes(|i| a[i] + b[i]),
            lanes(|i| a[i] - b[i]),
            lanes(|i| c[i] + e[i]),
            lanes(|i| c[i] - e[i]),
            lanes(|i| four * d1[i] - five * d3[i] + d5[i]),
        ])
    }

    #[inline(always)]
    fn output<T: FloatElement>(v: &[Lane<T>; MAX_ALPHA]) -> [Lane<T>; MAX_ALPHA] {
        let [v0, v1, v2, v3, v4, v5] = v;
        let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
        let sum12 = lanes(|i| v1[i] + v2[i]);
        let diff12 = lanes(|i| v1[i] - v2[i]);
        let sum34 = lanes(|i| v3[i] + v4[i]);
        let diff34 = lanes(|i| v3[i] - v4[i]);
        padded([
            lanes(|i| v0[i] + sum12[i] + sum34[i]),
            lanes(|i| diff12[i] + two * diff34[i]),
            lanes(|i| sum12[i] + four * sum34[i]),
            lanes(|i| diff12[i] + eight * diff34[i] + v5[i]),
        ])
    }

    fn kernel([g0, g1, g2]: [f64; 3]) -> [f64; MAX_ALPHA] {
        [
            g0 / 4.0,
            -(g0 + g1 + g2) / 6.0,
            -(g0 - g1 + g2) / 6.0,
            g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
            g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
            g2,
        ]
    }
}

/// `B^T d B` of one tile, `d[row][col]` its input pixels: `ALPHA x ALPHA` blocks.
#[inline(always)]
pub(super) fn input_tile<V: Variant, T: FloatElement>(
    d: &[[Lane<T>; MAX_ALPHA]; MAX_ALPHA],
) -> [[Lane<T>; MAX_ALPHA]; MAX_ALPHA] {
    let mut columns = [[[T::zero(); LANES]; MAX_ALPHA]; MAX_ALPHA];
    for col in 0..V::ALPHA {
        let column = std::array::from_fn(|row| d[row][col]);
        let t = V::input(&column);
        for row in 0..V::ALPHA {
            columns[row][col] = t[row];
        }
    }
    let mut out = [[[T::zero(); LANES]; MAX_ALPHA]; MAX_ALPHA];
    for row in 0..V::ALPHA {
        out[row] = V::input(&columns[row]);
    }
    out
}

/// `A^T v A` of one tile of products `v[row][col]`: `M x M` output blocks.
#[inline(always)]
pub(super) fn output_tile<V: Variant, T: FloatElement>(
    v: &[[Lane<T>; MAX_ALPHA]; MAX_ALPHA],
) -> [[Lane<T>; MAX_ALPHA]; MAX_ALPHA] {
    let mut columns = [[[T::zero(); LANES]; MAX_ALPHA]; MAX_ALPHA];
    for col in 0..V::ALPHA {
        let column = std::array::from_fn(|row| v[row][col]);
        let t = V::output(&column);
        for row in 0..V::M {
            columns[row][col] = t[row];
        }
    }
    let mut out = [[[T::zero(); LANES]; MAX_ALPHA]; MAX_ALPHA];
    for row in 0..V::M {
        out[row] = V::output(&columns[row]);
    }
    out
}

/// `G g G^T` of one 3x3 kernel `g[row][col]`, in f64: `ALPHA x ALPHA`.
pub(super) fn kernel_tile<V: Variant>(g: [[f64; 3]; 3]) -> [[f64; MAX_ALPHA]; MAX_ALPHA] {
    let columns: [[f64; MAX_ALPHA]; 3] = std::array::from_fn(|col| V::kernel([g[0][col], g[1][col], g[2][col]]));
    std::array::from_fn(|row| V::kernel([columns[0][row], columns[1][row], columns[2][row]]))
}
