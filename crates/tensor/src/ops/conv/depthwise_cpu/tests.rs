//! Every instruction set's row functions against a naive direct convolution, on shapes
//! that reach each path: channel tails, depth multipliers, strides, dilations and
//! asymmetric padding; in f64 and in f32 (whose 3x3 register blocks are twice as wide).
//! The public tests only reach the one this CPU picks.

use super::*;

/// `(batch, in_h, in_w, channels, multiplier, kh, kw, stride, dilation, [top, bottom, left, right])`
type Case = (usize, usize, usize, usize, usize, usize, usize, usize, usize, [usize; 4]);

const CASES: &[Case] = &[
    (2, 9, 11, 32, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (1, 8, 8, 37, 1, 3, 3, 2, 1, [0, 1, 0, 1]),
    (1, 7, 10, 16, 2, 3, 3, 1, 1, [1, 1, 1, 1]),
    (2, 6, 13, 5, 3, 5, 5, 1, 2, [4, 4, 4, 4]),
    (1, 12, 9, 48, 1, 1, 3, 3, 1, [0, 0, 2, 0]),
    (1, 5, 5, 20, 1, 5, 5, 2, 1, [2, 2, 2, 2]),
    (1, 4, 17, 64, 1, 3, 3, 1, 3, [3, 2, 0, 3]),
    // The stride-1 3x3 rows: two kernel rows (in_h 1), one (pad 2 above), none (pad 3),
    // no padding, rows narrower than a group of pixels, channel tails.
    (1, 1, 5, 16, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (1, 3, 7, 37, 1, 3, 3, 1, 1, [2, 2, 0, 2]),
    (2, 5, 12, 48, 1, 3, 3, 1, 1, [0, 0, 0, 0]),
    (1, 2, 2, 16, 1, 3, 3, 1, 1, [3, 3, 3, 3]),
    (3, 4, 4, 256, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (1, 6, 3, 21, 1, 3, 3, 1, 1, [1, 1, 2, 1]),
    // Forward bands of several rows (out_h 30 in bands of 2, 3 or 5, per dtype), widths
    // one and two past a group of pixels, small maps (every column a border column).
    (2, 30, 5, 32, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (3, 7, 6, 48, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (2, 4, 4, 64, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (2, 2, 2, 80, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (1, 3, 3, 16, 2, 3, 3, 1, 1, [1, 1, 1, 1]),
    // The stride-1 3x3 interior in groups of 4, 2 and 1 pixels (interiors of 17, 14, 9
    // and 7 columns), a tail of 8 channels, unpadded rows wider than a group.
    (1, 3, 19, 32, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (2, 4, 16, 24, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (1, 5, 11, 16, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (1, 3, 9, 48, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (1, 4, 21, 16, 1, 3, 3, 1, 1, [0, 0, 0, 0]),
    // The 3x3 interior at stride 2 (MobileNet's 'same': pad below and right only): a group
    // of 4 pixels, then a shorter one and the border column.
    (2, 12, 13, 32, 1, 3, 3, 2, 1, [0, 1, 0, 1]),
    // The stride-2 3x3 rows and input gradient's parity stencils: odd and even sizes,
    // padding 1 (odd: the pairs start at pixel 1), 'valid', 'same' of an even map, padding
    // 2 (kernel rows known at run time only), asymmetric padding, maps smaller than a
    // pair of pairs, channel tails of 1 and 17 and no full block at all; dilation 2 takes
    // the general paths.
    (1, 9, 11, 17, 1, 3, 3, 2, 1, [1, 1, 1, 1]),
    (2, 13, 15, 33, 1, 3, 3, 2, 1, [0, 0, 0, 0]),
    (2, 16, 16, 32, 1, 3, 3, 2, 1, [0, 1, 0, 1]),
    (1, 7, 9, 3, 1, 3, 3, 2, 1, [1, 1, 1, 1]),
    (1, 2, 3, 16, 1, 3, 3, 2, 1, [1, 1, 1, 1]),
    (1, 5, 20, 48, 1, 3, 3, 2, 1, [2, 2, 2, 2]),
    (1, 1, 1, 16, 1, 3, 3, 2, 1, [1, 1, 1, 1]),
    (2, 6, 17, 16, 1, 3, 3, 2, 1, [1, 0, 1, 0]),
    (1, 10, 22, 64, 1, 3, 3, 2, 1, [0, 1, 1, 0]),
    (1, 9, 9, 16, 1, 3, 3, 2, 2, [2, 2, 2, 2]),
    // 'valid' at stride 2 over an even map: the last input row and column are read by no
    // output pixel (their gradient is written as zeros, the buffer is not zeroed first).
    (2, 6, 8, 16, 1, 3, 3, 2, 1, [0, 0, 0, 0]),
    // Interior groups across 2 channel blocks (f32 and f64 blocks of 16), and 4 block by
    // block: with a channel tail (33, 67), 'valid', interiors of 17 and 3 columns, stride 2.
    (2, 5, 19, 33, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (1, 4, 11, 64, 1, 3, 3, 1, 1, [0, 0, 0, 0]),
    (1, 3, 5, 67, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    (1, 9, 18, 67, 1, 3, 3, 2, 1, [0, 1, 0, 1]),
    (2, 6, 7, 32, 1, 3, 3, 1, 1, [1, 1, 2, 0]),
];

fn spec(
    &(batch, in_h, in_w, c, m, kernel_h, kernel_w, stride, dilation, [pad_top, pad_bottom, pad_left, pad_right]): &Case,
) -> Conv2dSpec {
    let out = |n: usize, k: usize, lo: usize, hi: usize| (n + lo + hi - dilation * (k - 1) - 1) / stride + 1;
    Conv2dSpec {
        batch,
        in_h,
        in_w,
        in_channels: c,
        out_channels: c * m,
        groups: c,
        kernel_h,
        kernel_w,
        stride_h: stride,
        stride_w: stride,
        dilation_h: dilation,
        dilation_w: dilation,
        pad_top,
        pad_bottom,
        pad_left,
        pad_right,
        out_h: out(in_h, kernel_h, pad_top, pad_bottom),
        out_w: out(in_w, kernel_w, pad_left, pad_right),
    }
}

fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// Calls `f(image, oy, ox, ci, o, ky, kx, iy, ix)` for every tap that reads a real pixel.
fn each_tap(s: &Conv2dSpec, mut f: impl FnMut([usize; 9])) {
    let m = s.out_channels / s.in_channels;
    for b in 0..s.batch {
        for oy in 0..s.out_h {
            for ox in 0..s.out_w {
                for o in 0..s.out_channels {
                    for ky in 0..s.kernel_h {
                        for kx in 0..s.kernel_w {
                            let iy = (oy * s.stride_h + ky * s.dilation_h).checked_sub(s.pad_top);
                            let ix = (ox * s.stride_w + kx * s.dilation_w).checked_sub(s.pad_left);
                            if let (Some(iy), Some(ix)) = (iy, ix) {
                                if iy < s.in_h && ix < s.in_w {
                                    f([b, oy, ox, o / m, o, ky, kx, iy, ix]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `got` within `tolerance * (1 + |want|)` of `want`, element by element.
fn assert_close<T: Into<f64> + Copy>(what: &str, isa: usize, tolerance: f64, got: &[T], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, w)) in got.iter().zip(want).enumerate() {
        let g: f64 = g.into();
        assert!((g - w).abs() <= tolerance * (1.0 + w.abs()), "{what}, isa #{isa}, element {i}: {g} against {w}");
    }
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

#[test]
fn every_instruction_set_matches_the_naive_convolution() {
    for (n, case) in CASES.iter().enumerate() {
        let s = spec(case);
        let taps = s.kernel_h * s.kernel_w;
        let x = values(s.batch * s.in_h * s.in_w * s.in_channels, 1 + n as u64);
        let kernel = values(s.out_channels * taps, 100 + n as u64);
        let bias = values(s.out_channels, 200 + n as u64);
        let dy = values(s.batch * s.out_h * s.out_w * s.out_channels, 300 + n as u64);
        let at_x = |[b, _, _, ci, _, _, _, iy, ix]: [usize; 9]| ((b * s.in_h + iy) * s.in_w + ix) * s.in_channels + ci;
        let at_y = |[b, oy, ox, _, o, ..]: [usize; 9]| ((b * s.out_h + oy) * s.out_w + ox) * s.out_channels + o;
        let at_k = |[_, _, _, _, o, ky, kx, ..]: [usize; 9]| o * taps + ky * s.kernel_w + kx;

        let mut y = vec![0.0; dy.len()];
        for (i, v) in y.iter_mut().enumerate() {
            *v = bias[i % s.out_channels];
        }
        let mut dx = vec![0.0; x.len()];
        let mut dk = vec![0.0; kernel.len()];
        each_tap(&s, |t| {
            y[at_y(t)] += x[at_x(t)] * kernel[at_k(t)];
            dx[at_x(t)] += dy[at_y(t)] * kernel[at_k(t)];
            dk[at_k(t)] += dy[at_y(t)] * x[at_x(t)];
        });

        // f32 sums of up to a few hundred terms of magnitude below 1: a wrong or missing
        // tap is off by far more than this.
        let (x32, kernel32, bias32, dy32) = (f32s(&x), f32s(&kernel), f32s(&bias), f32s(&dy));
        for (i, isa) in Isa::available_fused().into_iter().enumerate() {
            let what = format!("case {case:?}");
            let (f64_tol, f32_tol) = (1e-12, 1e-4);
            let forward = forward_with(isa, &x, &kernel, Some(&bias), &s).unwrap();
            assert_close(&format!("forward, {what}"), i, f64_tol, &forward, &y);
            let forward = forward_with(isa, &x32, &kernel32, Some(&bias32), &s).unwrap();
            assert_close(&format!("f32 forward, {what}"), i, f32_tol, &forward, &y);
            let input = backward_input_with(isa, &dy, &kernel, &s).unwrap();
            assert_close(&format!("input gradient, {what}"), i, f64_tol, &input, &dx);
            let input = backward_input_with(isa, &dy32, &kernel32, &s).unwrap();
            assert_close(&format!("f32 input gradient, {what}"), i, f32_tol, &input, &dx);
            let filter = backward_filter_with(isa, &x, &dy, &s).unwrap();
            assert_close(&format!("kernel gradient, {what}"), i, f64_tol, &filter, &dk);
            let filter = backward_filter_with(isa, &x32, &dy32, &s).unwrap();
            assert_close(&format!("f32 kernel gradient, {what}"), i, f32_tol, &filter, &dk);
        }
    }
}

#[test]
fn forward_bands_divide_the_rows_and_stay_near_the_task_size() {
    for out_h in 1..40 {
        for row_bytes in [4, 100, 4096, 16 << 10, 1 << 20] {
            let band = band_rows(out_h, row_bytes);
            assert!(band >= 1 && out_h.is_multiple_of(band), "out_h {out_h}, row bytes {row_bytes}: band {band}");
            assert!(band == 1 || band * row_bytes <= TASK_BYTES, "out_h {out_h}, row bytes {row_bytes}: band {band}");
        }
    }
    assert_eq!(band_rows(32, 4096), 4);
    assert_eq!(band_rows(7, 100), 7);
}

/// Each output pixel of `s` summed as every path must: the bias, then each tap that reads a
/// real pixel in kernel-row, then kernel-column order, fused (`fma`) or not.
fn ordered_forward<T: FloatElement>(s: &Conv2dSpec, x: &[T], kernel: &[T], bias: &[T], fma: bool) -> Vec<T> {
    let taps = s.kernel_h * s.kernel_w;
    let mut y: Vec<T> = (0..s.batch * s.out_h * s.out_w * s.out_channels).map(|i| bias[i % s.out_channels]).collect();
    each_tap(s, |[b, oy, ox, ci, o, ky, kx, iy, ix]| {
        let at = ((b * s.out_h + oy) * s.out_w + ox) * s.out_channels + o;
        let (u, v) =
            (x[((b * s.in_h + iy) * s.in_w + ix) * s.in_channels + ci], kernel[o * taps + ky * s.kernel_w + kx]);
        y[at] = if fma { u.mul_add(v, y[at]) } else { y[at] + u * v };
    });
    y
}

/// The forward pass gives the ordered sums' bits exactly, in f64 and f32, on every
/// instruction set: whichever path (border pixels, interior groups, the stride-1 rows in
/// groups of 4 with their border columns, channel tails) computes a pixel, it adds the same
/// terms in the same order. MobileNet's stride-1 and stride-2 shapes at widths 4 to 32.
#[test]
fn every_forward_path_sums_in_the_same_order() {
    let cases: &[Case] = &[
        (2, 16, 16, 64, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (2, 8, 8, 128, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (2, 4, 4, 256, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (1, 32, 32, 32, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (1, 12, 12, 48, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (2, 8, 8, 37, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (1, 9, 11, 32, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (2, 16, 16, 64, 1, 3, 3, 2, 1, [0, 1, 0, 1]),
        (2, 8, 8, 16, 1, 3, 3, 1, 1, [0, 0, 0, 0]),
    ];
    for (n, case) in cases.iter().enumerate() {
        let s = spec(case);
        let x = values(s.batch * s.in_h * s.in_w * s.in_channels, 1 + n as u64);
        let kernel = values(s.out_channels * 9, 100 + n as u64);
        let bias = values(s.out_channels, 200 + n as u64);
        let (x32, kernel32, bias32) = (f32s(&x), f32s(&kernel), f32s(&bias));
        for isa in Isa::available_fused() {
            let fma = isa != Isa::Portable;
            let got = forward_with(isa, &x, &kernel, Some(&bias), &s).unwrap();
            let want = ordered_forward(&s, &x, &kernel, &bias, fma);
            let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same && got.len() == want.len(), "f64 forward, case {case:?}, {isa:?}");
            let got = forward_with(isa, &x32, &kernel32, Some(&bias32), &s).unwrap();
            let want = ordered_forward(&s, &x32, &kernel32, &bias32, fma);
            let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same && got.len() == want.len(), "f32 forward, case {case:?}, {isa:?}");
        }
    }
}

/// The kernel gradient of `s` summed as every 3x3 path over full channel blocks must: the
/// output rows cut into the fixed runs of [`FILTER_CHUNKS`], each tap summed per run over
/// its rows, then columns, in ascending order (fused or not), and the runs' sums added in
/// run order.
fn ordered_filter<T: FloatElement>(s: &Conv2dSpec, x: &[T], dy: &[T], fma: bool) -> Vec<T> {
    let (taps, co) = (s.kernel_h * s.kernel_w, s.out_channels);
    let rows = s.batch * s.out_h;
    let per_chunk = rows.div_ceil(FILTER_CHUNKS).max(1);
    let mut runs = vec![vec![T::zero(); taps * co]; rows.div_ceil(per_chunk)];
    // `each_tap` walks rows, then columns, in ascending order: each tap's terms come in
    // the order the kernels add them.
    each_tap(s, |[b, oy, ox, ci, o, ky, kx, iy, ix]| {
        let run = &mut runs[(b * s.out_h + oy) / per_chunk][o * taps + ky * s.kernel_w + kx];
        let (u, g) = (
            x[((b * s.in_h + iy) * s.in_w + ix) * s.in_channels + ci],
            dy[((b * s.out_h + oy) * s.out_w + ox) * co + o],
        );
        *run = if fma { u.mul_add(g, *run) } else { *run + u * g };
    });
    let mut total = vec![T::zero(); taps * co];
    for run in &runs {
        for (t, &r) in total.iter_mut().zip(run) {
            *t = *t + r;
        }
    }
    total
}

/// The kernel gradient gives the ordered sums' bits exactly, in f64 and f32, on every
/// instruction set, for 3x3 kernels over full channel blocks: the generic rows and the f32
/// AVX2 intrinsics (MobileNet's stride-1 shapes) add the same terms in the same order.
#[test]
fn every_kernel_gradient_path_sums_in_the_same_order() {
    let cases: &[Case] = &[
        (2, 8, 8, 128, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (2, 16, 16, 64, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (3, 4, 4, 256, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (1, 12, 12, 48, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (1, 2, 8, 32, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (40, 8, 8, 16, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (2, 8, 8, 16, 1, 3, 3, 1, 1, [0, 0, 0, 0]),
        (2, 16, 16, 64, 1, 3, 3, 2, 1, [0, 1, 0, 1]),
    ];
    for (n, case) in cases.iter().enumerate() {
        let s = spec(case);
        let x = values(s.batch * s.in_h * s.in_w * s.in_channels, 1 + n as u64);
        let dy = values(s.batch * s.out_h * s.out_w * s.out_channels, 300 + n as u64);
        let (x32, dy32) = (f32s(&x), f32s(&dy));
        for isa in Isa::available_fused() {
            let fma = isa != Isa::Portable;
            let got = backward_filter_with(isa, &x, &dy, &s).unwrap();
            let want = ordered_filter(&s, &x, &dy, fma);
            let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same && got.len() == want.len(), "f64 kernel gradient, case {case:?}, {isa:?}");
            let got = backward_filter_with(isa, &x32, &dy32, &s).unwrap();
            let want = ordered_filter(&s, &x32, &dy32, fma);
            let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same && got.len() == want.len(), "f32 kernel gradient, case {case:?}, {isa:?}");
        }
    }
}
