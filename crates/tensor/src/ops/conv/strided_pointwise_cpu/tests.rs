//! The one-pass input gradient of strided or padded 1x1 convolutions against the generic
//! GEMM + col2im route it replaces, bit for bit, on random geometries: strides 1..4 each
//! way, padding on any side, odd sizes, channel counts that are not multiples of 8, batch
//! 1..3 and a batch that is several chunks, with and without a bias; f64 and f32.

use super::{applies, backward_input};
use crate::backend::Conv2dSpec;
use crate::ops::conv::cpu::backward_input_col2im;
use crate::utilities::alloc::ZeroBits;
use crate::FloatElement;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random<T: FloatElement>(len: usize, rng: &mut StdRng) -> Vec<T> {
    (0..len).map(|_| T::from_f64(rng.random_range(-1.0..1.0))).collect()
}

/// A 1x1 convolution's geometry.
fn spec(
    batch: usize,
    (in_h, in_w): (usize, usize),
    (ci, co): (usize, usize),
    (sh, sw): (usize, usize),
    pad: [usize; 4],
) -> Conv2dSpec {
    let [top, bottom, left, right] = pad;
    Conv2dSpec {
        batch,
        in_h,
        in_w,
        in_channels: ci,
        out_channels: co,
        groups: 1,
        kernel_h: 1,
        kernel_w: 1,
        stride_h: sh,
        stride_w: sw,
        dilation_h: 1,
        dilation_w: 1,
        pad_top: top,
        pad_bottom: bottom,
        pad_left: left,
        pad_right: right,
        out_h: (in_h + top + bottom - 1) / sh + 1,
        out_w: (in_w + left + right - 1) / sw + 1,
    }
}

fn bits<T: FloatElement>(v: &[T]) -> Vec<u64> {
    v.iter().map(|&x| crate::Element::to_f64(x).to_bits()).collect()
}

/// Both routes on `s`, with and without a bias; the results must be the same bits.
fn check<T: FloatElement + ZeroBits>(s: &Conv2dSpec, rng: &mut StdRng) {
    assert!(applies(s));
    let dy = random::<T>(s.batch * s.out_h * s.out_w * s.out_channels, rng);
    let k = random::<T>(s.out_channels * s.in_channels, rng);
    let bias = random::<T>(s.in_channels, rng);
    for b in [None, Some(bias.as_slice())] {
        let ours = backward_input(&dy, &k, b, s).unwrap();
        let generic = backward_input_col2im(&dy, &k, b, s).unwrap();
        assert_eq!(bits(&ours), bits(&generic), "geometry {s:?}, bias {}", b.is_some());
    }
}

#[test]
fn equals_zero_fill_then_col2im() {
    let mut rng = StdRng::seed_from_u64(12);
    for case in 0..60 {
        let (sh, sw) = (rng.random_range(1..5usize), rng.random_range(1..5usize));
        let pad = std::array::from_fn(|_| if rng.random_bool(0.3) { rng.random_range(1..3) } else { 0 });
        let (sh, sw) = if sh == 1 && sw == 1 && pad == [0; 4] { (2, 1) } else { (sh, sw) };
        let s = spec(
            rng.random_range(1..4),
            (rng.random_range(1..12), rng.random_range(1..12)),
            (rng.random_range(1..20), rng.random_range(1..20)),
            (sh, sw),
            pad,
        );
        if case % 2 == 0 {
            check::<f64>(&s, &mut rng);
        } else {
            check::<f32>(&s, &mut rng);
        }
    }
}

#[test]
fn seed_shortcut_over_several_chunks() {
    // The seed's 64->64 stride-2 shortcut at 30x30 ('same': no padding), on enough images
    // for several chunks, and a padded variant.
    let mut rng = StdRng::seed_from_u64(7);
    check::<f32>(&spec(9, (30, 30), (64, 64), (2, 2), [0; 4]), &mut rng);
    check::<f64>(&spec(5, (15, 15), (24, 40), (2, 2), [1, 0, 0, 1]), &mut rng);
}

#[test]
fn negative_zero_products_are_added_to_zero() {
    // A kernel of -0 gives products of -0; col2im adds them into +0, so must this route.
    let s = spec(1, (4, 4), (3, 2), (2, 2), [0; 4]);
    let dy = vec![1.0f32; s.out_h * s.out_w * 2];
    let k = vec![-0.0f32; 6];
    let ours = backward_input(&dy, &k, None, &s).unwrap();
    assert!(ours.iter().all(|v| v.to_bits() == 0.0f32.to_bits()), "{ours:?}");
}
