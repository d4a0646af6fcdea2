//! A small MLP trained by hand-written SGD through `DataParallel`, for the threads and
//! MPI tests: every rank starts from its own random weights (so rank 0's broadcast
//! matters) and takes its slice of each global batch.

use tapegrad_distributed::{DataParallel, ReduceOp};
use tapegrad_tensor::{Device, GradientTape, Tensor, Variable};

/// Features per example.
pub const IN: usize = 3;
/// Outputs per example.
pub const OUT: usize = 2;

/// Example `i`'s features and targets: a fixed, nonlinear pattern.
fn example(i: usize) -> ([f32; IN], [f32; OUT]) {
    let t = i as f32;
    let x = [(t * 0.37).sin(), (t * 0.11).cos(), ((t * 0.05) % 1.0) - 0.5];
    (x, [x[0] * x[1] + 0.3, x[2] - x[0] * 0.5])
}

fn rows(start: usize, count: usize, device: &Device) -> (Tensor, Tensor) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in start..start + count {
        let (x, y) = example(i);
        xs.extend(x);
        ys.extend(y);
    }
    (Tensor::from_vec(xs, [count, IN], device).unwrap(), Tensor::from_vec(ys, [count, OUT], device).unwrap())
}

/// The model's variables, drawn from `seed`.
pub fn init(seed: u64, device: &Device) -> Vec<Variable> {
    let draw = |k: u64, n: usize| -> Vec<f32> {
        (0..n).map(|i| (((seed * 7919 + k * 131 + i as u64 * 17) % 1000) as f32 / 1000.0 - 0.5) * 0.8).collect()
    };
    let v = |name: &str, k, dims: Vec<usize>| {
        let n = dims.iter().product();
        Variable::new(name, Tensor::from_vec(draw(k, n), dims, device).unwrap(), true)
    };
    vec![v("w1", 1, vec![IN, 8]), v("b1", 2, vec![8]), v("w2", 3, vec![8, OUT]), v("b2", 4, vec![OUT])]
}

/// `steps` SGD steps on global batches of `global_batch` rows, this rank taking its
/// `global_batch / world` rows of each; returns the global mean loss of every step and
/// the final weights.
pub fn train(dp: &DataParallel, global_batch: usize, steps: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
    train_on(dp, global_batch, steps, &Device::Cpu)
}

/// [`train`] with the data and weights on `device`.
pub fn train_on(dp: &DataParallel, global_batch: usize, steps: usize, device: &Device) -> (Vec<f32>, Vec<Vec<f32>>) {
    let vars = init(dp.rank() as u64 + 1, device);
    dp.broadcast_variables(&vars).unwrap();
    let local = global_batch / dp.world_size();
    let mut losses = Vec::new();
    for step in 0..steps {
        let (x, y) = rows(step * global_batch + dp.rank() * local, local, device);
        let tape = GradientTape::new();
        let loss = tape
            .record(|| {
                let h = x.matmul(&vars[0].value())?.add(&vars[1].value())?.tanh()?;
                let p = h.matmul(&vars[2].value())?.add(&vars[3].value())?;
                p.sub(&y)?.square()?.mean_all()
            })
            .unwrap();
        let grads = dp.gradient(&tape, &loss, &vars).unwrap();
        for (v, g) in vars.iter().zip(&grads) {
            let g = g.as_ref().expect("every variable has a gradient");
            v.assign(v.value_untracked().sub(&g.mul_scalar(0.5).unwrap()).unwrap()).unwrap();
        }
        let global = dp.communicator().all_reduce(&loss, ReduceOp::Mean).unwrap();
        losses.push(global.to_scalar::<f32>().unwrap());
    }
    (losses, vars.iter().map(|v| v.value_untracked().to_vec::<f32>().unwrap()).collect())
}

/// Asserts two runs agree within f32 rounding (the sums are associated differently).
pub fn assert_close(a: &(Vec<f32>, Vec<Vec<f32>>), b: &(Vec<f32>, Vec<Vec<f32>>)) {
    let close = |x: f32, y: f32| (x - y).abs() <= 1e-5 + 1e-4 * y.abs();
    assert!(a.0.iter().zip(&b.0).all(|(x, y)| close(*x, *y)), "losses differ: {:?} vs {:?}", a.0, b.0);
    for (va, vb) in a.1.iter().zip(&b.1) {
        assert!(va.iter().zip(vb).all(|(x, y)| close(*x, *y)), "weights differ: {va:?} vs {vb:?}");
    }
    // Training moved: the comparison is not between two untouched initialisations.
    assert!(a.0.last() < a.0.first(), "the loss did not decrease: {:?}", a.0);
}

/// bf16 and f16 collectives on 2 ranks, with results worked out by hand (not by the code
/// under test): every input and result is exactly representable, so the literals below
/// are exact.
#[allow(dead_code)] // each test binary uses part of it
pub mod low_precision {
    use tapegrad_tensor::half::{bf16, f16};
    use tapegrad_tensor::{DType, Device, Tensor};

    /// One dtype's inputs on ranks 0 and 1 and the all-reduce results every rank must get.
    pub struct Case {
        pub dtype: DType,
        /// Each rank's 4 values, as f32 (exact in the dtype).
        pub ranks: [Vec<f32>; 2],
        pub sum: Vec<f32>,
        pub mean: Vec<f32>,
    }

    pub fn cases() -> Vec<Case> {
        vec![
            // bf16 keeps 8 significant bits. 1 + 2^-8 (exact in f32) is halfway between the
            // bf16 values 1 and 1 + 2^-7: rounded once, to even, it is 1 (and its mean 0.5).
            // 1000 + 3 = 1003 lies between 1000 and 1004 (spacing 4): 1004; the mean 501.5,
            // between 500 and 502 (spacing 2): 502.
            Case {
                dtype: DType::BF16,
                ranks: [vec![1.0, 0.5, -3.0, 1000.0], vec![1.0 / 256.0, 0.25, 1.0, 3.0]],
                sum: vec![1.0, 0.75, -2.0, 1004.0],
                mean: vec![0.5, 0.375, -1.0, 502.0],
            },
            // f16 keeps 11 significant bits. 1 + 2^-11 and 2048 + 1 are halfway cases: to
            // even, 1 and 2048 (means 0.5 and 1024). 65504 (f16's largest) twice overflows
            // to infinity as a sum, but the mean divides in f32 before rounding: 65504.
            Case {
                dtype: DType::F16,
                ranks: [vec![1.0, 2048.0, -0.5, 65504.0], vec![1.0 / 2048.0, 1.0, 0.25, 65504.0]],
                sum: vec![1.0, 2048.0, -0.25, f32::INFINITY],
                mean: vec![0.5, 1024.0, -0.125, 65504.0],
            },
        ]
    }

    impl Case {
        /// The bits of `values` in the case's dtype.
        pub fn bits(&self, values: &[f32]) -> Vec<u16> {
            match self.dtype {
                DType::BF16 => values.iter().map(|&x| bf16::from_f32(x).to_bits()).collect(),
                _ => values.iter().map(|&x| f16::from_f32(x).to_bits()).collect(),
            }
        }

        /// Rank `rank`'s input, a [4] tensor of the dtype on `device`.
        pub fn input(&self, rank: usize, device: &Device) -> Tensor {
            let v = &self.ranks[rank];
            match self.dtype {
                DType::BF16 => Tensor::from_vec(v.iter().map(|&x| bf16::from_f32(x)).collect(), [4], device),
                _ => Tensor::from_vec(v.iter().map(|&x| f16::from_f32(x)).collect(), [4], device),
            }
            .unwrap()
        }

        /// Asserts that `t` holds exactly `expected` (compared as bits) in the case's dtype.
        pub fn assert_bits(&self, what: &str, t: &Tensor, expected: &[f32]) {
            assert_eq!(t.dtype(), self.dtype, "{what}");
            let got: Vec<u16> = match self.dtype {
                DType::BF16 => t.to_vec::<bf16>().unwrap().iter().map(|x| x.to_bits()).collect(),
                _ => t.to_vec::<f16>().unwrap().iter().map(|x| x.to_bits()).collect(),
            };
            assert_eq!(got, self.bits(expected), "{what} of {}: expected {expected:?}", self.dtype);
        }
    }
}
