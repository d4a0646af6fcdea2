//! Both Winograd variants (forward and kernel gradient) against plain-loop direct sums in f64.

use super::kernel_gradient::backward_filter_with;
use super::{
    conv2d, conv2d_backward_filter, conv2d_with, isa::Isa, select, select_kernel_gradient, KernelLayout, Tiling,
};
use crate::backend::Conv2dSpec;
use crate::{Element, FloatElement};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// A 3x3 stride-1 convolution of `[batch, h, w, ci]` with padding (top, bottom, left, right).
fn spec(batch: usize, (h, w): (usize, usize), (ci, co): (usize, usize), pad: [usize; 4]) -> Conv2dSpec {
    Conv2dSpec {
        batch,
        in_h: h,
        in_w: w,
        in_channels: ci,
        out_channels: co,
        groups: 1,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        pad_top: pad[0],
        pad_bottom: pad[1],
        pad_left: pad[2],
        pad_right: pad[3],
        out_h: h + pad[0] + pad[1] - 2,
        out_w: w + pad[2] + pad[3] - 2,
    }
}

fn random(len: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// The textbook definition, in f64: every output sums its 9 taps over every input channel.
fn direct(x: &[f64], k: &[f64], bias: Option<&[f64]>, s: &Conv2dSpec) -> Vec<f64> {
    let (ci, co) = (s.in_channels, s.out_channels);
    let mut y = vec![0.0; s.batch * s.out_h * s.out_w * co];
    for b in 0..s.batch {
        for oy in 0..s.out_h {
            for ox in 0..s.out_w {
                for o in 0..co {
                    let mut acc = bias.map_or(0.0, |bias| bias[o]);
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let iy = (oy + ky) as isize - s.pad_top as isize;
                            let ix = (ox + kx) as isize - s.pad_left as isize;
                            if iy < 0 || ix < 0 || iy >= s.in_h as isize || ix >= s.in_w as isize {
                                continue;
                            }
                            let xp = &x[((b * s.in_h + iy as usize) * s.in_w + ix as usize) * ci..][..ci];
                            let kp = &k[((o * 3 + ky) * 3 + kx) * ci..][..ci];
                            acc += xp.iter().zip(kp).map(|(a, b)| a * b).sum::<f64>();
                        }
                    }
                    y[((b * s.out_h + oy) * s.out_w + ox) * co + o] = acc;
                }
            }
        }
    }
    y
}

/// Largest |computed - reference| over the largest |reference|, computed with `tiling`
/// (`None`: im2col + GEMM) in `T`.
fn relative_error<T: FloatElement + crate::utilities::alloc::ZeroBits>(
    s: &Conv2dSpec,
    tiling: Option<Tiling>,
    with_bias: bool,
    seed: u64,
) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = random(s.batch * s.in_h * s.in_w * s.in_channels, &mut rng);
    let k = random(s.out_channels * 9 * s.in_channels, &mut rng);
    let bias = random(s.out_channels, &mut rng);
    let bias = with_bias.then_some(&bias[..]);
    // The reference sees the same (rounded) operands as the variant under test.
    let round = |v: &[f64]| -> Vec<T> { v.iter().map(|&a| T::from_f64(a)).collect() };
    let widen = |v: &[T]| -> Vec<f64> { v.iter().map(|&a| Element::to_f64(a)).collect() };
    let (xt, kt, bt) = (round(&x), round(&k), bias.map(round));
    let expected = direct(&widen(&xt), &widen(&kt), bt.as_deref().map(widen).as_deref(), s);
    let got = match tiling {
        Some(tiling) => conv2d(&xt, &kt, bt.as_deref(), s, tiling),
        None => super::super::cpu::conv2d_im2col(&xt, &kt, bt.as_deref(), s),
    }
    .expect("convolution");
    assert_eq!(got.len(), expected.len(), "output length");
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    got.iter().zip(&expected).map(|(g, e)| (Element::to_f64(*g) - e).abs()).fold(0.0, f64::max) / scale
}

/// Shapes with odd sizes (tile overhang), channel tails (not multiples of 16), batch 1,
/// and every padding kind: none, TF 'same', asymmetric, wider than the kernel needs.
fn shapes() -> Vec<Conv2dSpec> {
    vec![
        spec(1, (5, 5), (3, 2), [0, 0, 0, 0]),
        spec(2, (7, 9), (17, 5), [1, 1, 1, 1]),
        spec(3, (6, 6), (16, 16), [0, 1, 0, 1]),
        spec(1, (11, 4), (33, 19), [1, 0, 2, 1]),
        spec(2, (2, 2), (8, 31), [1, 1, 1, 1]),
        spec(1, (3, 8), (1, 1), [2, 2, 0, 2]),
        spec(2, (15, 15), (20, 24), [1, 1, 1, 1]),
        spec(1, (13, 10), (40, 17), [1, 1, 1, 1]),
    ]
}

#[test]
fn f64_matches_the_definition() {
    for (i, s) in shapes().iter().enumerate() {
        for tiling in [Tiling::F2, Tiling::F4] {
            let err = relative_error::<f64>(s, Some(tiling), i % 2 == 0, i as u64);
            assert!(err < 1e-13, "{tiling:?} on shape {i}: f64 relative error {err:e}");
        }
    }
}

#[test]
fn f32_error_is_bounded() {
    for (i, s) in shapes().iter().enumerate() {
        for (tiling, bound) in [(Tiling::F2, 2e-6), (Tiling::F4, 2e-5)] {
            let err = relative_error::<f32>(s, Some(tiling), i % 2 == 1, 100 + i as u64);
            assert!(err < bound, "{tiling:?} on shape {i}: f32 relative error {err:e} over {bound:e}");
        }
    }
}

#[test]
fn chunks_and_batches_agree() {
    // A batch that needs several chunks: each image's output must not depend on which chunk
    // (or which tile index inside it) computed it.
    let s = spec(9, (30, 30), (64, 64), [1, 1, 1, 1]);
    let err = relative_error::<f64>(&s, Some(Tiling::F4), true, 7);
    assert!(err < 1e-13, "several chunks: f64 relative error {err:e}");
}

#[test]
fn selection_keeps_f64_direct_and_skips_unsuited_shapes() {
    let seed_layer = spec(64, (15, 15), (64, 64), [1, 1, 1, 1]);
    assert!(select::<f32>(&seed_layer).is_some());
    assert_eq!(select::<f64>(&seed_layer), None);
    assert_eq!(select::<f32>(&spec(64, (32, 32), (3, 64), [0, 0, 0, 0])), None, "the 3-channel stem");
    let strided = Conv2dSpec { stride_h: 2, ..seed_layer };
    assert_eq!(select::<f32>(&strided), None);
    let dilated = Conv2dSpec { dilation_w: 2, ..seed_layer };
    assert_eq!(select::<f32>(&dilated), None);
    let grouped = Conv2dSpec { groups: 2, ..seed_layer };
    assert_eq!(select::<f32>(&grouped), None);
    assert_eq!(select::<f32>(&spec(64, (4, 4), (256, 256), [1, 1, 1, 1])), Some(Tiling::F2));
    assert_eq!(select::<f32>(&spec(64, (2, 2), (512, 512), [1, 1, 1, 1])), None, "2x2 maps");
}

/// The f32 error of each variant (and of im2col + GEMM) on the seed ResNet18's stride-1
/// 3x3 shapes (batch 2), against f64 direct convolution, for docs/performance.md:
/// `cargo test -p tapegrad-tensor --lib winograd::tests::seed_errors -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, printed"]
fn seed_errors() {
    for (size, c) in [(15, 64), (8, 128), (4, 256), (2, 512)] {
        let s = spec(2, (size, size), (c, c), [1, 1, 1, 1]);
        for tiling in [None, Some(Tiling::F2), Some(Tiling::F4)] {
            let errs: Vec<f64> = (0..3).map(|seed| relative_error::<f32>(&s, tiling, true, seed)).collect();
            let worst = errs.iter().cloned().fold(0.0, f64::max);
            let name = tiling.map_or("im2col".to_string(), |t| format!("{t:?}"));
            println!("{size}x{size} {c}->{c} {name}: max relative error {worst:.2e}");
        }
    }
}

#[test]
fn every_instruction_set_gives_the_same_bits() {
    let s = spec(3, (13, 11), (37, 21), [1, 1, 1, 1]);
    let mut rng = StdRng::seed_from_u64(5);
    let x: Vec<f32> = random(s.batch * s.in_h * s.in_w * s.in_channels, &mut rng).iter().map(|&v| v as f32).collect();
    let k: Vec<f32> = random(s.out_channels * 9 * s.in_channels, &mut rng).iter().map(|&v| v as f32).collect();
    let bias: Vec<f32> = random(s.out_channels, &mut rng).iter().map(|&v| v as f32).collect();
    for tiling in [Tiling::F2, Tiling::F4] {
        let portable = conv2d_with(Isa::Portable, &x, &k, KernelLayout::Own, Some(&bias), &s, tiling).unwrap();
        for isa in Isa::available() {
            let got = conv2d_with(isa, &x, &k, KernelLayout::Own, Some(&bias), &s, tiling).unwrap();
            let same = got.iter().zip(&portable).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{tiling:?}: {isa:?} differs from the portable build");
        }
    }
}

#[test]
fn input_gradient_reads_the_kernel_flipped_in_place() {
    // The convolution behind the input gradient of `s`, its kernel flipped in a copy or read
    // flipped by the kernel transform: the same bits.
    let s = spec(3, (10, 9), (37, 21), [1, 1, 1, 1]);
    let flipped = crate::ops::conv::cpu::backward_input_geometry(&s).unwrap();
    let mut rng = StdRng::seed_from_u64(6);
    let f32s = |v: Vec<f64>| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    let dy = f32s(random(s.batch * s.out_h * s.out_w * s.out_channels, &mut rng));
    let k = f32s(random(s.out_channels * 9 * s.in_channels, &mut rng));
    let copy = crate::ops::conv::cpu::flip_kernel(&k, &s).unwrap();
    for tiling in [Tiling::F2, Tiling::F4] {
        let want = conv2d(&dy, &copy, None, &flipped, tiling).unwrap();
        let got = super::conv2d_backward_input(&dy, &k, None, &flipped, tiling).unwrap();
        let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same && got.len() == want.len(), "{tiling:?}: reading the kernel flipped changed the result");
    }
}

/// Forward times of im2col, F2 and F4 on the seed's shapes (and two larger maps) at batch
/// 64 (minimum over interleaved repetitions), in 1- and 2-thread pools: the measurements
/// behind `select`.
/// `cargo test --release -p tapegrad-tensor --lib winograd::tests::seed_timings -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, printed"]
fn seed_timings() {
    use std::time::{Duration, Instant};
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for (size, c) in [(15, 64), (8, 128), (4, 256), (2, 512), (6, 128), (30, 64), (32, 32)] {
            let s = spec(64, (size, size), (c, c), [1, 1, 1, 1]);
            let mut rng = StdRng::seed_from_u64(1);
            let x: Vec<f32> = random(s.batch * size * size * c, &mut rng).iter().map(|&v| v as f32).collect();
            let k: Vec<f32> = random(c * 9 * c, &mut rng).iter().map(|&v| v as f32).collect();
            let mut best = [Duration::MAX; 3];
            pool.install(|| {
                for _ in 0..12 {
                    for (i, slot) in best.iter_mut().enumerate() {
                        let t = Instant::now();
                        let y = match i {
                            0 => super::super::cpu::conv2d_im2col(&x, &k, None, &s),
                            1 => conv2d(&x, &k, None, &s, Tiling::F2),
                            _ => conv2d(&x, &k, None, &s, Tiling::F4),
                        };
                        std::hint::black_box(y.unwrap());
                        *slot = (*slot).min(t.elapsed());
                    }
                }
            });
            let ms = best.map(|d| d.as_secs_f64() * 1e3);
            println!(
                "{threads} threads, {size}x{size} {c}->{c}: im2col {:.2} ms, F2 {:.2} ms, F4 {:.2} ms",
                ms[0], ms[1], ms[2]
            );
        }
    }
}

/// The kernel gradient's textbook definition, in f64: every tap sums `dy * x` over every
/// image and output pixel.
fn direct_filter(x: &[f64], dy: &[f64], s: &Conv2dSpec) -> Vec<f64> {
    let (ci, co) = (s.in_channels, s.out_channels);
    let mut dw = vec![0.0; co * 9 * ci];
    for b in 0..s.batch {
        for oy in 0..s.out_h {
            for ox in 0..s.out_w {
                let g = &dy[((b * s.out_h + oy) * s.out_w + ox) * co..][..co];
                for ky in 0..3 {
                    for kx in 0..3 {
                        let iy = (oy + ky) as isize - s.pad_top as isize;
                        let ix = (ox + kx) as isize - s.pad_left as isize;
                        if iy < 0 || ix < 0 || iy >= s.in_h as isize || ix >= s.in_w as isize {
                            continue;
                        }
                        let xp = &x[((b * s.in_h + iy as usize) * s.in_w + ix as usize) * ci..][..ci];
                        for (o, &go) in g.iter().enumerate() {
                            let dst = &mut dw[((o * 3 + ky) * 3 + kx) * ci..][..ci];
                            dst.iter_mut().zip(xp).for_each(|(d, &a)| *d += go * a);
                        }
                    }
                }
            }
        }
    }
    dw
}

/// Random `(x, dy)` of `s`, rounded to `T`.
fn filter_operands<T: FloatElement>(s: &Conv2dSpec, seed: u64) -> (Vec<T>, Vec<T>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = random(s.batch * s.in_h * s.in_w * s.in_channels, &mut rng);
    let dy = random(s.batch * s.out_h * s.out_w * s.out_channels, &mut rng);
    let round = |v: &[f64]| -> Vec<T> { v.iter().map(|&a| T::from_f64(a)).collect() };
    (round(&x), round(&dy))
}

/// Largest |computed - reference| over the largest |reference| of the kernel gradient,
/// computed with `tiling` (`None`: im2col + GEMM) in `T`.
fn filter_relative_error<T: FloatElement + crate::utilities::alloc::ZeroBits>(
    s: &Conv2dSpec,
    tiling: Option<Tiling>,
    seed: u64,
) -> f64 {
    let (x, dy) = filter_operands::<T>(s, seed);
    let widen = |v: &[T]| -> Vec<f64> { v.iter().map(|&a| Element::to_f64(a)).collect() };
    let expected = direct_filter(&widen(&x), &widen(&dy), s);
    let got = match tiling {
        Some(tiling) => conv2d_backward_filter(&x, &dy, s, tiling),
        None => super::super::cpu::backward_filter_im2col(&x, &dy, s),
    }
    .expect("kernel gradient");
    assert_eq!(got.len(), expected.len(), "kernel gradient length");
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    got.iter().zip(&expected).map(|(g, e)| (Element::to_f64(*g) - e).abs()).fold(0.0, f64::max) / scale
}

#[test]
fn kernel_gradient_f64_matches_the_definition() {
    for (i, s) in shapes().iter().enumerate() {
        for tiling in [Tiling::F2, Tiling::F4] {
            let err = filter_relative_error::<f64>(s, Some(tiling), 200 + i as u64);
            assert!(err < 1e-13, "{tiling:?} on shape {i}: f64 kernel gradient relative error {err:e}");
        }
    }
}

#[test]
fn kernel_gradient_f32_error_is_bounded() {
    for (i, s) in shapes().iter().enumerate() {
        for (tiling, bound) in [(Tiling::F2, 2e-6), (Tiling::F4, 2e-5)] {
            let err = filter_relative_error::<f32>(s, Some(tiling), 300 + i as u64);
            assert!(err < bound, "{tiling:?} on shape {i}: f32 kernel gradient relative error {err:e} over {bound:e}");
        }
    }
}

/// A batch the kernel gradient cuts into several chunks (F4: 7 images of 64x64 with 16+16
/// channels per chunk, F2: 4).
fn several_chunks() -> Conv2dSpec {
    spec(9, (64, 64), (16, 16), [1, 1, 1, 1])
}

#[test]
fn kernel_gradient_sums_chunks() {
    for tiling in [Tiling::F2, Tiling::F4] {
        let err = filter_relative_error::<f64>(&several_chunks(), Some(tiling), 11);
        assert!(err < 1e-13, "{tiling:?} over several chunks: f64 relative error {err:e}");
    }
}

#[test]
fn kernel_gradient_bits_do_not_depend_on_threads_or_instruction_set() {
    let s = several_chunks();
    let (x, dy) = filter_operands::<f32>(&s, 12);
    for tiling in [Tiling::F2, Tiling::F4] {
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let reference = one.install(|| backward_filter_with(Isa::Portable, &x, &dy, &s, tiling).unwrap());
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for isa in Isa::available() {
                let got = pool.install(|| backward_filter_with(isa, &x, &dy, &s, tiling).unwrap());
                let same = got.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{tiling:?}: {threads} threads with {isa:?} differ from 1 portable thread");
            }
        }
    }
}

#[test]
fn the_cpu_kernel_gradient_runs_the_selected_variant() {
    // The entry point every CPU kernel gradient goes through (the training step's too).
    let s = spec(2, (15, 15), (64, 64), [1, 1, 1, 1]);
    let (x, dy) = filter_operands::<f32>(&s, 13);
    let tiling = select_kernel_gradient::<f32>(&s).expect("the seed's 15x15 layer runs with Winograd");
    let routed = super::super::cpu::conv2d_backward_filter(&x, &dy, &s).unwrap();
    let direct = conv2d_backward_filter(&x, &dy, &s, tiling).unwrap();
    assert!(routed.iter().zip(&direct).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(select_kernel_gradient::<f64>(&s), None, "f64 keeps im2col");
    assert_eq!(select_kernel_gradient::<f32>(&spec(64, (2, 2), (512, 512), [1, 1, 1, 1])), None, "2x2 maps");
}

/// The f32 error of the kernel gradient with each variant (and im2col + GEMM) on the seed
/// ResNet18's stride-1 3x3 shapes (batch 8), against the f64 definition:
/// `cargo test -p tapegrad-tensor --lib winograd::tests::seed_kernel_gradient_errors -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, printed"]
fn seed_kernel_gradient_errors() {
    let same = [1, 1, 1, 1];
    for (size, c, pad) in [(15, 64, same), (8, 128, same), (4, 256, same), (2, 512, same), (15, 64, [0; 4])] {
        let s = spec(8, (size, size), (c, c), pad);
        for tiling in [None, Some(Tiling::F2), Some(Tiling::F4)] {
            let errs: Vec<f64> = (0..3).map(|seed| filter_relative_error::<f32>(&s, tiling, seed)).collect();
            let worst = errs.iter().cloned().fold(0.0, f64::max);
            let name = tiling.map_or("im2col".to_string(), |t| format!("{t:?}"));
            let padding = if pad == same { "same" } else { "valid" };
            println!("{size}x{size} {c}->{c} {padding} {name}: max relative error {worst:.2e}");
        }
    }
}

/// Kernel-gradient times of im2col, F2 and F4 on the seed's shapes at batch 64 (minimum
/// over interleaved repetitions), in 1- and 2-thread pools: the measurements behind
/// `select_kernel_gradient`.
/// `cargo test --release -p tapegrad-tensor --lib winograd::tests::seed_kernel_gradient_timings -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, printed"]
fn seed_kernel_gradient_timings() {
    use std::time::{Duration, Instant};
    let same = [1, 1, 1, 1];
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for (size, c, pad) in [(15, 64, same), (8, 128, same), (4, 256, same), (2, 512, same), (15, 64, [0; 4])] {
            let s = spec(64, (size, size), (c, c), pad);
            let (x, dy) = filter_operands::<f32>(&s, 1);
            let mut best = [Duration::MAX; 3];
            pool.install(|| {
                for _ in 0..8 {
                    for (i, slot) in best.iter_mut().enumerate() {
                        let t = Instant::now();
                        let dw = match i {
                            0 => super::super::cpu::backward_filter_im2col(&x, &dy, &s),
                            1 => conv2d_backward_filter(&x, &dy, &s, Tiling::F2),
                            _ => conv2d_backward_filter(&x, &dy, &s, Tiling::F4),
                        };
                        std::hint::black_box(dw.unwrap());
                        *slot = (*slot).min(t.elapsed());
                    }
                }
            });
            let ms = best.map(|d| d.as_secs_f64() * 1e3);
            let padding = if pad == same { "same" } else { "valid" };
            println!(
                "{threads} threads, {size}x{size} {c}->{c} {padding}: im2col {:.2} ms, F2 {:.2} ms, F4 {:.2} ms",
                ms[0], ms[1], ms[2]
            );
        }
    }
}
