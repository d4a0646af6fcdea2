//! Layer and group normalization on CUDA against the CPU backend: forward and the three
//! gradients (through GradientTape) on random inputs, across the kernels' block
//! boundaries (groups longer than a thread block, more than 256 rows for the parameter
//! gradients), with and without gamma and beta, f32 and f64; repeated runs are
//! bit-identical (no atomics).
//!
//! Without a usable GPU every test prints `SKIPPED <test>: <reason>` on stderr and passes;
//! `REQUIRE_GPU=1` turns that into a failure (scripts/cuda-emu/run.sh sets it).
#![cfg(feature = "cuda")]

use rand::rngs::StdRng;
use rand::SeedableRng;
use tapegrad_tensor::testing::cuda_or_skip;
use tapegrad_tensor::{DType, Device, GradientTape, Result, Tensor};

/// Which op, with which affine parameters.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// `layer_norm(first_axis, ..)`.
    Layer(usize),
    /// `group_norm(groups, ..)`.
    Group(usize),
}

struct Case {
    name: &'static str,
    shape: &'static [usize],
    dtype: DType,
    op: Op,
    gamma: bool,
    beta: bool,
    /// Added to x (a large mean against a unit spread).
    offset: f64,
}

fn param_dims(c: &Case) -> Vec<usize> {
    match c.op {
        Op::Layer(first) => c.shape[first..].to_vec(),
        Op::Group(_) => vec![*c.shape.last().unwrap()],
    }
}

/// Output and gradients of `sum(y * w)` with respect to x and the given parameters.
fn run(c: &Case, x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>, w: &Tensor) -> Result<Vec<Tensor>> {
    let tape = GradientTape::new();
    let mut sources = vec![x];
    sources.extend(gamma);
    sources.extend(beta);
    for s in &sources {
        tape.watch(s);
    }
    let y = tape.record(|| match c.op {
        Op::Layer(first) => x.layer_norm(first, gamma, beta, 1e-3),
        Op::Group(groups) => x.group_norm(groups, gamma, beta, 1e-3),
    })?;
    let grads = tape.gradient_with_output_gradient(&y, &sources, w)?;
    Ok(std::iter::once(y).chain(grads.into_iter().map(|g| g.expect("a gradient"))).collect())
}

/// `|a - b| <= tol * (|b| + max|b|)` elementwise.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!((a - b).abs() <= tol * (b.abs() + scale), "{what}: element {i}: cuda {a} vs cpu {b} (tolerance {tol})");
    }
}

fn check(c: &Case, device: Device, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = |dims: Vec<usize>, rng: &mut StdRng| Tensor::rand_normal(dims, 0.0, 1.0, c.dtype, &Device::Cpu, rng);
    let x = normal(c.shape.to_vec(), &mut rng).unwrap().add_scalar(c.offset).unwrap();
    let gamma = normal(param_dims(c), &mut rng).unwrap().add_scalar(1.0).unwrap();
    let beta = normal(param_dims(c), &mut rng).unwrap();
    let w = normal(c.shape.to_vec(), &mut rng).unwrap();
    let (gamma, beta) = (c.gamma.then_some(gamma), c.beta.then_some(beta));
    let up = |t: &Tensor| t.to_device(&device).unwrap();
    let cpu = run(c, &x, gamma.as_ref(), beta.as_ref(), &w).unwrap_or_else(|e| panic!("{} on cpu: {e}", c.name));
    let (xg, gg, bg, wg) = (up(&x), gamma.as_ref().map(up), beta.as_ref().map(up), up(&w));
    let gpu = run(c, &xg, gg.as_ref(), bg.as_ref(), &wg).unwrap_or_else(|e| panic!("{} on cuda: {e}", c.name));
    let again = run(c, &xg, gg.as_ref(), bg.as_ref(), &wg).unwrap();
    // f32: the two backends add in different orders (lanes vs block trees) and CUDA
    // contracts multiply-adds; a mean of 1000 leaves x - mean with f32's absolute rounding.
    let tol = match c.dtype {
        DType::F32 if c.offset != 0.0 => 2e-4,
        DType::F32 => 2e-5,
        _ => 1e-10,
    };
    let names = ["forward", "d_x", "d_gamma or d_beta", "d_beta"];
    for (i, ((g, cp), a)) in gpu.iter().zip(&cpu).zip(&again).enumerate() {
        assert_eq!(g.device(), device, "{}: device", c.name);
        assert_close(&format!("{} {}", c.name, names[i]), g, cp, tol);
        assert_eq!(g.to_vec_f64().unwrap(), a.to_vec_f64().unwrap(), "{}: {} not deterministic", c.name, names[i]);
    }
}

#[test]
fn group_and_layer_norm_match_cpu() {
    use DType::{F32, F64};
    let Some((_lock, device)) = cuda_or_skip("group_and_layer_norm_match_cpu") else { return };
    let cases = [
        // 2 * 9 * 11 = 198 rows: the parameter gradients have one partial block.
        Case {
            name: "gn nhwc f32",
            shape: &[2, 9, 11, 12],
            dtype: F32,
            op: Op::Group(3),
            gamma: true,
            beta: true,
            offset: 0.0,
        },
        // 3 * 12 * 12 = 432 rows: two partial blocks; groups of 576 values: several passes of a block.
        Case {
            name: "gn 2 blocks f64",
            shape: &[3, 12, 12, 8],
            dtype: F64,
            op: Op::Group(2),
            gamma: true,
            beta: true,
            offset: 0.0,
        },
        Case {
            name: "gn instance f32",
            shape: &[2, 5, 5, 6],
            dtype: F32,
            op: Op::Group(6),
            gamma: true,
            beta: false,
            offset: 0.0,
        },
        Case {
            name: "gn rank 2 no affine",
            shape: &[7, 10],
            dtype: F64,
            op: Op::Group(5),
            gamma: false,
            beta: false,
            offset: 0.0,
        },
        Case {
            name: "gn rank 3 beta only",
            shape: &[4, 6, 9],
            dtype: F32,
            op: Op::Group(3),
            gamma: false,
            beta: true,
            offset: 0.0,
        },
        Case {
            name: "ln last axis f32",
            shape: &[300, 24],
            dtype: F32,
            op: Op::Layer(1),
            gamma: true,
            beta: true,
            offset: 0.0,
        },
        Case {
            name: "ln image f64",
            shape: &[2, 6, 7, 5],
            dtype: F64,
            op: Op::Layer(1),
            gamma: true,
            beta: true,
            offset: 0.0,
        },
        Case {
            name: "ln long rows",
            shape: &[3, 1500],
            dtype: F32,
            op: Op::Layer(1),
            gamma: true,
            beta: false,
            offset: 0.0,
        },
        Case {
            name: "ln whole tensor",
            shape: &[5, 4],
            dtype: F64,
            op: Op::Layer(0),
            gamma: true,
            beta: true,
            offset: 0.0,
        },
        Case {
            name: "ln mean 1000",
            shape: &[40, 64],
            dtype: F32,
            op: Op::Layer(1),
            gamma: true,
            beta: true,
            offset: 1000.0,
        },
    ];
    for (seed, c) in cases.iter().enumerate() {
        check(c, device, 100 + seed as u64);
    }
}

#[test]
fn bad_operands_on_cuda_are_errors() {
    let Some((_lock, device)) = cuda_or_skip("bad_operands_on_cuda_are_errors") else { return };
    let x = Tensor::zeros([2, 3, 4], DType::F32, &device).unwrap();
    let err = x.group_norm(3, None, None, 1e-3).unwrap_err().to_string();
    assert!(err.contains("groups = 3") && err.contains("4 channels"), "{err}");
    let cpu_gamma = Tensor::ones([4], DType::F32, &Device::Cpu).unwrap();
    assert!(x.group_norm(2, Some(&cpu_gamma), None, 1e-3).is_err());
    let empty = Tensor::zeros([0, 4], DType::F32, &device).unwrap();
    assert_eq!(empty.layer_norm(1, None, None, 1e-3).unwrap().dims(), &[0, 4]);
}
