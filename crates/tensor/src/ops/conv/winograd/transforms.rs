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
    /// `B^T d`: `ALPHA` input values to `ALPHA` transformed ones (entries past `ALPHA`
    /// pass through). By value: the arrays stay in registers, where references to
    /// scratch arrays compiled to `memcpy` and `memset` calls.
    fn input<T: FloatElement, const N: usize>(d: [[T; N]; MAX_ALPHA]) -> [[T; N]; MAX_ALPHA];
    /// `A^T v`: `ALPHA` products to `M` outputs (entries past `M` are left over).
    fn output<T: FloatElement, const N: usize>(v: [[T; N]; MAX_ALPHA]) -> [[T; N]; MAX_ALPHA];
    /// `G g`: 3 kernel taps to `ALPHA` transformed ones (in f64, rounded once at the end).
    fn kernel(g: [f64; 3]) -> [f64; MAX_ALPHA];
    /// `A y`, the transpose of [`Variant::output`]: `M` output-gradient values to `ALPHA`
    /// (the kernel gradient's transform of `dy`; entries past `M` are not read).
    fn output_adjoint<T: FloatElement, const N: usize>(y: [[T; N]; MAX_ALPHA]) -> [[T; N]; MAX_ALPHA];
    /// `G^T u`, the transpose of [`Variant::kernel`]: `ALPHA` values to 3 kernel taps (the
    /// kernel gradient's last step, in f64).
    fn kernel_adjoint(u: [f64; MAX_ALPHA]) -> [f64; 3];
}

/// F(2x2,3x3): 16 products per 4 outputs (direct: 36).
pub(super) struct F2;

/// F(4x4,3x3): 36 products per 16 outputs (direct: 144), with larger rounding error.
pub(super) struct F4;

/// `f(i)` for every lane.
#[inline(always)]
fn lanes<T: Copy, const N: usize>(f: impl Fn(usize) -> T) -> [T; N] {
    std::array::from_fn(f)
}

impl Variant for F2 {
    const M: usize = 2;
    const ALPHA: usize = 4;

    #[inline(always)]
    fn input<T: FloatElement, const N: usize>(d: [[T; N]; MAX_ALPHA]) -> [[T; N]; MAX_ALPHA] {
        let [d0, d1, d2, d3, ..] = d;
        [
            lanes(|i| d0[i] - d2[i]),
            lanes(|i| d1[i] + d2[i]),
            lanes(|i| d2[i] - d1[i]),
            lanes(|i| d1[i] - d3[i]),
            d[4],
            d[5],
        ]
    }

    #[inline(always)]
    fn output<T: FloatElement, const N: usize>(v: [[T; N]; MAX_ALPHA]) -> [[T; N]; MAX_ALPHA] {
        let [v0, v1, v2, v3, _, _] = v;
        [lanes(|i| v0[i] + v1[i] + v2[i]), lanes(|i| v1[i] - v2[i] - v3[i]), v[2], v[3], v[4], v[5]]
    }

    fn kernel([g0, g1, g2]: [f64; 3]) -> [f64; MAX_ALPHA] {
        [g0, (g0 + g1 + g2) / 2.0, (g0 - g1 + g2) / 2.0, g2, 0.0, 0.0]
    }

    #[inline(always)]
    fn output_adjoint<T: FloatElement, const N: usize>(y: [[T; N]; MAX_ALPHA]) -> [[T; N]; MAX_ALPHA] {
        let [y0, y1, ..] = y;
        [y0, lanes(|i| y0[i] + y1[i]), lanes(|i| y0[i] - y1[i]), lanes(|i| -y1[i]), y[4], y[5]]
    }

    fn kernel_adjoint([u0, u1, u2, u3, ..]: [f64; MAX_ALPHA]) -> [f64; 3] {
        [u0 + (u1 + u2) / 2.0, (u1 - u2) / 2.0, (u1 + u2) / 2.0 + u3]
    }
}

impl Variant for F4 {
    const M: usize = 4;
    const ALPHA: usize = 6;

    #[inline(always)]
    fn input<T: FloatElement, const N: usize>(d: [[T; N]; MAX_ALPHA]) -> [[T; N]; MAX_ALPHA] {
        let [d0, d1, d2, d3, d4, d5] = d;
        let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
        // Shared terms, as in Lavin & Gray: rows 1-2 and 3-4 differ in the sign of one pair.
        let a: [T; N] = lanes(|i| d4[i] - four * d2[i]);
        let b: [T; N] = lanes(|i| d3[i] - four * d1[i]);
        let c: [T; N] = lanes(|i| d4[i] - d2[i]);
        let e: [T; N] = lanes(|i| two * (d3[i] - d1[i]));
        [
            lanes(|i| four * d0[i] - five * d2[i] + d4[i]),
            lanes(|i| a[i] + b[i]),
            lanes(|i| a[i] - b[i]),
            lanes(|i| c[i] + e[i]),
            lanes(|i| c[i] - e[i]),
            lanes(|i| four * d1[i] - five * d3[i] + d5[i]),
        ]
    }

    #[inline(always)]
    fn output<T: FloatElement, const N: usize>(v: [[T; N]; MAX_ALPHA]) -> [[T; N]; MAX_ALPHA] {
        let [v0, v1, v2, v3, v4, v5] = v;
        let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
        let sum12: [T; N] = lanes(|i| v1[i] + v2[i]);
        let diff12: [T; N] = lanes(|i| v1[i] - v2[i]);
        let sum34: [T; N] = lanes(|i| v3[i] + v4[i]);
        let diff34: [T; N] = lanes(|i| v3[i] - v4[i]);
        [
            lanes(|i| v0[i] + sum12[i] + sum34[i]),
            lanes(|i| diff12[i] + two * diff34[i]),
            lanes(|i| sum12[i] + four * sum34[i]),
            lanes(|i| diff12[i] + eight * diff34[i] + v5[i]),
            v[4],
            v[5],
        ]
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

    #[inline(always)]
    fn output_adjoint<T: FloatElement, const N: usize>(y: [[T; N]; MAX_ALPHA]) -> [[T; N]; MAX_ALPHA] {
        let [y0, y1, y2, y3, ..] = y;
        let (two, four) = (T::from_f64(2.0), T::from_f64(4.0));
        // Rows 1-2 and 3-4 differ in the sign of their odd terms, as in `output`.
        let even: [T; N] = lanes(|i| y0[i] + y2[i]);
        let odd: [T; N] = lanes(|i| y1[i] + y3[i]);
        let even4: [T; N] = lanes(|i| y0[i] + four * y2[i]);
        let odd4: [T; N] = lanes(|i| two * (y1[i] + four * y3[i]));
        [
            y0,
            lanes(|i| even[i] + odd[i]),
            lanes(|i| even[i] - odd[i]),
            lanes(|i| even4[i] + odd4[i]),
            lanes(|i| even4[i] - odd4[i]),
            y3,
        ]
    }

    fn kernel_adjoint([u0, u1, u2, u3, u4, u5]: [f64; MAX_ALPHA]) -> [f64; 3] {
        [
            u0 / 4.0 - (u1 + u2) / 6.0 + (u3 + u4) / 24.0,
            (u2 - u1) / 6.0 + (u3 - u4) / 12.0,
            (u3 + u4 - u1 - u2) / 6.0 + u5,
        ]
    }
}

/// Values in one row of a tile: `MAX_ALPHA` blocks of [`LANES`] channels, block `j` at
/// `j * LANES`.
pub(super) const ROW: usize = MAX_ALPHA * LANES;

/// One tile of blocks, row by row. Flat rows, so that the first 1-D pass (which combines
/// whole rows) runs straight over them; arrays of blocks needed reshaping, which the
/// compiler turned into gathers and scatters.
pub(super) type Tile<T> = [[T; ROW]; MAX_ALPHA];

/// Block `j` of a row.
#[inline(always)]
pub(super) fn block<T: Copy>(row: &[T; ROW], j: usize) -> Lane<T> {
    *row[j * LANES..].first_chunk().expect("a row holds MAX_ALPHA blocks")
}

#[inline(always)]
pub(super) fn block_mut<T>(row: &mut [T; ROW], j: usize) -> &mut Lane<T> {
    row[j * LANES..].first_chunk_mut().expect("a row holds MAX_ALPHA blocks")
}

/// `body` for rows `0..rows` (at most `MAX_ALPHA`), written out: as a loop, the compiler
/// vectorised across rows, with gathers and scatters.
macro_rules! each_row {
    ($rows:expr, |$r:ident| $body:expr) => {{
        let rows = $rows;
        let $r = 0;
        $body;
        let $r = 1;
        $body;
        let $r = 2;
        if $r < rows {
            $body;
        }
        let $r = 3;
        if $r < rows {
            $body;
        }
        let $r = 4;
        if $r < rows {
            $body;
        }
        let $r = 5;
        if $r < rows {
            $body;
        }
    }};
}

/// The second 1-D pass over one row: `f` combines its blocks.
#[inline(always)]
fn along_row<T: FloatElement>(
    row: &mut [T; ROW],
    keep: usize,
    f: impl Fn([Lane<T>; MAX_ALPHA]) -> [Lane<T>; MAX_ALPHA],
) {
    let t = f(std::array::from_fn(|j| block(row, j)));
    for (j, value) in t.into_iter().enumerate().take(keep) {
        *block_mut(row, j) = value;
    }
}

/// `B^T d B` of one tile, in place: `d` its input pixels, then its `ALPHA x ALPHA`
/// transformed blocks. `B^T d` combines whole rows; `. B` the blocks within each row.
#[inline(always)]
pub(super) fn input_tile<V: Variant, T: FloatElement>(d: &mut Tile<T>) {
    *d = V::input::<T, ROW>(*d);
    each_row!(V::ALPHA, |r| along_row(&mut d[r], V::ALPHA, V::input::<T, LANES>));
}

/// `A^T v A` of one tile, in place: `v` its products, then its `M x M` output blocks in
/// the top-left corner.
#[inline(always)]
pub(super) fn output_tile<V: Variant, T: FloatElement>(v: &mut Tile<T>) {
    *v = V::output::<T, ROW>(*v);
    each_row!(V::M, |r| along_row(&mut v[r], V::M, V::output::<T, LANES>));
}

/// `A y A^T` of one tile of output gradients, in place: `y` its `M x M` blocks in the
/// top-left corner, then its `ALPHA x ALPHA` transformed blocks. The transpose of
/// [`output_tile`]: rows first, then the blocks within each row.
#[inline(always)]
pub(super) fn gradient_tile<V: Variant, T: FloatElement>(y: &mut Tile<T>) {
    *y = V::output_adjoint::<T, ROW>(*y);
    each_row!(V::ALPHA, |r| along_row(&mut y[r], V::ALPHA, V::output_adjoint::<T, LANES>));
}

/// `G^T u G` of one `ALPHA x ALPHA` tile `u[row][col]`, in f64: the 3x3 kernel gradient
/// it stands for (the transpose of [`kernel_tile`]).
pub(super) fn kernel_adjoint_tile<V: Variant>(u: [[f64; MAX_ALPHA]; MAX_ALPHA]) -> [[f64; 3]; 3] {
    let rows: [[f64; 3]; MAX_ALPHA] = std::array::from_fn(|r| V::kernel_adjoint(u[r]));
    let columns: [[f64; 3]; 3] = std::array::from_fn(|kx| V::kernel_adjoint(std::array::from_fn(|r| rows[r][kx])));
    std::array::from_fn(|ky| std::array::from_fn(|kx| columns[kx][ky]))
}

/// `G g G^T` of one 3x3 kernel `g[row][col]`, in f64: `ALPHA x ALPHA`.
pub(super) fn kernel_tile<V: Variant>(g: [[f64; 3]; 3]) -> [[f64; MAX_ALPHA]; MAX_ALPHA] {
    let columns: [[f64; MAX_ALPHA]; 3] = std::array::from_fn(|col| V::kernel([g[0][col], g[1][col], g[2][col]]));
    std::array::from_fn(|row| V::kernel([columns[0][row], columns[1][row], columns[2][row]]))
}
