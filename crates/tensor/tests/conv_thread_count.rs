//! The convolution's three products give the same bits in 1-, 2- and 3-thread pools, on
//! shapes that take each CPU path: a single chunk with a split GEMM, many chunks (the
//! kernel gradient's batch sum cut into runs), groups, the direct depthwise kernels,
//! Winograd (F4 and F2; chunk by chunk and whole chunks per thread), windows that tile the
//! input (kernel == stride) and tiny maps (one GEMM per output pixel and tap).

use rand::{rngs::StdRng, SeedableRng};
use tapegrad_tensor::{Conv2dParams, DType, Device, GradientTape, Padding, Tensor};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::rand_uniform(shape, -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap()
}

/// The output, input gradient and kernel gradient, as bits, computed in a pool of `threads`.
fn products(threads: usize, x: &Tensor, k: &Tensor, p: &Conv2dParams) -> [Vec<u32>; 3] {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let tape = GradientTape::new();
        tape.watch(x);
        tape.watch(k);
        let y = tape.record(|| x.conv2d(k, None, p)).unwrap();
        // A weighted sum, so the output gradient is not uniform.
        let w = random(y.dims(), 99);
        let loss = tape.record(|| y.mul(&w)?.sum_all()).unwrap();
        let grads = tape.gradient(&loss, &[x, k]).unwrap();
        let bits = |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
        [bits(&y), bits(grads[0].as_ref().unwrap()), bits(grads[1].as_ref().unwrap())]
    })
}

fn check(name: &str, x_shape: [usize; 4], k_shape: [usize; 4], groups: usize, stride: usize) {
    check_padded(name, x_shape, k_shape, groups, stride, Padding::Same)
}

fn check_padded(name: &str, x_shape: [usize; 4], k_shape: [usize; 4], groups: usize, stride: usize, padding: Padding) {
    let x = random(&x_shape, 1);
    let k = random(&k_shape, 2);
    let p = Conv2dParams { strides: (stride, stride), padding, groups, ..Default::default() };
    let one = products(1, &x, &k, &p);
    for threads in [2, 3] {
        let many = products(threads, &x, &k, &p);
        for (what, (a, b)) in ["output", "input gradient", "kernel gradient"].iter().zip(one.iter().zip(&many)) {
            assert!(a == b, "{name}: the {what} differs between 1 and {threads} threads");
        }
    }
}

#[test]
fn dense_single_chunk() {
    // 16 x 4 pixels x 1152 patch, a kernel too large for L2 (295K elements): under the
    // chunking threshold, one chunk, split GEMMs.
    check("dense, one chunk", [16, 4, 4, 128], [256, 3, 3, 128], 1, 2);
}

#[test]
fn dense_small_kernel_chunks() {
    // 16 x 64 pixels x 288 patch, a kernel that fits L2 (18K elements): chunks of a few
    // images (the U-Net's 3x3 stride-2 transposed convolution at 16x16), cut differently
    // for each thread count.
    check("dense, small kernel", [16, 16, 16, 32], [64, 3, 3, 32], 1, 2);
}

#[test]
fn dense_many_chunks() {
    // 40 x 1024 pixels x 72 patch: chunked; 40 images do not divide evenly into the runs.
    check("dense, many chunks", [40, 32, 32, 8], [16, 3, 3, 8], 1, 1);
}

#[test]
fn grouped_many_chunks() {
    check("groups 4, many chunks", [24, 32, 32, 16], [16, 3, 3, 4], 4, 2);
}

#[test]
fn depthwise() {
    check("depthwise", [24, 20, 20, 48], [48, 3, 3, 1], 48, 1);
    // Small maps (forward bands of whole images, border columns only) and stride 2.
    check("depthwise, 4x4 maps", [16, 4, 4, 80], [80, 3, 3, 1], 80, 1);
    check("depthwise, stride 2", [8, 9, 9, 40], [40, 3, 3, 1], 40, 2);
}

#[test]
fn winograd_f4_several_chunks() {
    // 15x15 outputs with 32 channels in f32: Winograd F(4x4,3x3), tiles overhanging the
    // map, the batch cut into chunks; the input gradient is Winograd too.
    check("winograd F4", [40, 15, 15, 32], [32, 3, 3, 32], 1, 1);
}

#[test]
fn winograd_f4_whole_chunks_per_thread() {
    // 7 chunks of 6 or 7 images: at 2 and 3 threads each thread runs whole chunks (at
    // least two chunks per thread), at 1 thread each step of a chunk runs in parallel.
    check("winograd F4, whole chunks per thread", [48, 15, 15, 64], [64, 3, 3, 64], 1, 1);
}

#[test]
fn tiny_maps_one_gemm_per_tap() {
    // 2x2 outputs, a batch of 16 or more: one GEMM per output pixel and kernel tap, at
    // stride 1 and from a 4x4 input at stride 2.
    check("2x2 map", [20, 2, 2, 48], [72, 3, 3, 48], 1, 1);
    check("2x2 map from 4x4 at stride 2", [20, 4, 4, 40], [56, 3, 3, 40], 1, 2);
}

#[test]
fn winograd_f2_small_map() {
    // 4x4 outputs, channels off the 16-lane blocks: Winograd F(2x2,3x3).
    check("winograd F2", [6, 4, 4, 24], [40, 3, 3, 24], 1, 1);
}

#[test]
fn windows_that_tile_the_input() {
    // 2x2 stride 2 'valid': one GEMM around a space-to-depth gather, in runs of output rows.
    check_padded("kernel == stride", [5, 16, 16, 24], [32, 2, 2, 24], 1, 2, Padding::Valid);
    // One-pixel output rows: 8 rows of 1 pixel, the runs' GEMMs as short as they get.
    check_padded("kernel == stride, one-pixel rows", [1, 16, 2, 8], [12, 2, 2, 8], 1, 2, Padding::Valid);
}
