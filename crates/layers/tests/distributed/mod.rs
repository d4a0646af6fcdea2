//! Checks shared by the thread-group tests and the mpirun tests: each runs on every rank
//! of a 2-rank communicator and compares against one process doing the combined batch.

use std::sync::Arc;
use tapegrad_distributed::{Communicator, DataParallel, ReduceOp};
use tapegrad_layers::optimizers::Adam;
use tapegrad_layers::training::{FitOptions, TensorDataset, Trainer};
use tapegrad_layers::{losses, BatchNormalization, Dense, Layer, Mode, Sequential, SyncBatchNormalization};
use tapegrad_tensor::{DType, Device, GradientTape, Tensor};

/// Rows `start..start + count` of a fixed pattern, shaped `[count, ...tail]`.
fn pattern(start: usize, count: usize, tail: &[usize], scale: f32) -> Tensor {
    let per: usize = tail.iter().product();
    let v: Vec<f32> =
        (start * per..(start + count) * per).map(|i| ((i as f32 * 0.731).sin() * 2.0 + 0.3) * scale).collect();
    let mut dims = vec![count];
    dims.extend_from_slice(tail);
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 2e-5 + 2e-4 * y.abs(), "{what}[{i}]: {x} vs {y}");
    }
}

/// SyncBatchNormalization on 2 ranks (3 NHWC images each) equals BatchNormalization on
/// the 6 images: outputs, moving statistics, and the gradients of the global mean of
/// `y * w` with respect to x, gamma and beta.
pub fn sync_batch_norm_matches_combined_batch(comm: Arc<Communicator>) {
    let (rank, world) = (comm.rank(), comm.world_size());
    assert_eq!(world, 2);
    let per_rank = 3;
    let tail = [2, 2, 4];
    let x_all = pattern(0, per_rank * world, &tail, 1.5);
    let w_all = pattern(100, per_rank * world, &tail, 1.0);
    let x = x_all.narrow(0, rank * per_rank, per_rank).unwrap();
    let w = w_all.narrow(0, rank * per_rank, per_rank).unwrap();
    let gamma = Tensor::from_vec(vec![1.5f32, 0.5, -1.0, 2.0], [4], &Device::Cpu).unwrap();
    let beta = Tensor::from_vec(vec![0.1f32, -0.2, 0.3, 0.0], [4], &Device::Cpu).unwrap();

    let run = |layer: &dyn Layer, x: &Tensor, w: &Tensor, vars: [tapegrad_tensor::Variable; 4]| {
        vars[0].assign(gamma.clone()).unwrap();
        vars[1].assign(beta.clone()).unwrap();
        let tape = GradientTape::new();
        tape.watch(x);
        let (y, loss) = tape
            .record(|| {
                let y = layer.call(x, Mode::Train)?;
                let loss = y.mul(w)?.mean_all()?;
                Ok((y, loss))
            })
            .unwrap();
        let grads = tape.gradient(&loss, &[x, &vars[0].value_untracked(), &vars[1].value_untracked()]).unwrap();
        let grads: Vec<Tensor> = grads.into_iter().map(Option::unwrap).collect();
        (y, grads, vars[2].value_untracked(), vars[3].value_untracked())
    };
    let bn_vars = |l: &BatchNormalization| {
        [
            l.gamma().unwrap().clone(),
            l.beta().unwrap().clone(),
            l.moving_mean().unwrap().clone(),
            l.moving_variance().unwrap().clone(),
        ]
    };

    let reference = BatchNormalization::new().momentum(0.5);
    reference.build(&x_all.shape().clone().into()).unwrap();
    let (y_ref, g_ref, mm_ref, mv_ref) = run(&reference, &x_all, &w_all, bn_vars(&reference));

    let sync = SyncBatchNormalization::new(comm.clone()).momentum(0.5);
    sync.build(&x.shape().clone().into()).unwrap();
    let (y, g, mm, mv) = run(&sync, &x, &w, bn_vars(sync.as_batch_normalization()));

    let rows = |t: &Tensor| t.narrow(0, rank * per_rank, per_rank).unwrap().to_vec::<f32>().unwrap();
    close(&y.to_vec::<f32>().unwrap(), &rows(&y_ref), "y");
    // The global loss is the mean of the ranks' losses; a rank's x gradient holds every
    // rank's loss (through the statistics), so it is `world` times the global one, as in
    // PyTorch's SyncBatchNorm under DDP (which divides the weights' gradients by world).
    close(&g[0].mul_scalar(1.0 / world as f64).unwrap().to_vec::<f32>().unwrap(), &rows(&g_ref[0]), "dx");
    for (i, what) in [(1, "dgamma"), (2, "dbeta")] {
        let averaged = comm.all_reduce(&g[i], ReduceOp::Mean).unwrap();
        close(&averaged.to_vec::<f32>().unwrap(), &g_ref[i].to_vec::<f32>().unwrap(), what);
    }
    close(&mm.to_vec::<f32>().unwrap(), &mm_ref.to_vec::<f32>().unwrap(), "moving_mean");
    close(&mv.to_vec::<f32>().unwrap(), &mv_ref.to_vec::<f32>().unwrap(), "moving_variance");
    // Inference needs no communication and uses the moving statistics, as BatchNormalization.
    let yi = sync.call(&x, Mode::Infer).unwrap();
    close(&yi.to_vec::<f32>().unwrap(), &rows(&reference.call(&x_all, Mode::Infer).unwrap()), "inference");
}

fn model() -> Sequential {
    Sequential::new().add(Dense::new(6).activation(tapegrad_layers::ActivationFn::Tanh)).add(Dense::new(3))
}

/// Sets every variable of a built model from `seed`.
fn set_weights(model: &dyn Layer, seed: u64) {
    for (k, v) in model.variables().iter().enumerate() {
        let t = v.value_untracked();
        let n = t.elem_count();
        let vals: Vec<f32> =
            (0..n).map(|i| ((seed * 977 + k as u64 * 31 + i as u64 * 7) % 200) as f32 / 200.0 - 0.5).collect();
        v.assign(Tensor::from_vec(vals, t.dims().to_vec(), &Device::Cpu).unwrap()).unwrap();
    }
}

/// Examples `start..start + count`: 5 features, a label of 3 classes.
fn examples(start: usize, count: usize) -> (Tensor, Tensor) {
    let x = pattern(start, count, &[5], 1.0);
    let y: Vec<i64> = (start..start + count).map(|i| ((i * 7) % 3) as i64).collect();
    (x, Tensor::from_vec(y, [count], &Device::Cpu).unwrap())
}

/// Trainer::fit with Adam, 2 epochs of 4 steps: 2 ranks with batch 3 each (rank 1 starting
/// from other weights, which rank 0's broadcast replaces) equal one process with batch 6.
pub fn fit_matches_combined_batch(comm: Arc<Communicator>) {
    let (rank, world, b, steps) = (comm.rank(), comm.world_size(), 3, 4);
    let train = |m: &Sequential, dp: Option<Arc<DataParallel>>, x: Tensor, y: Tensor, batch: usize| {
        m.call(&Tensor::zeros([1, 5], DType::F32, &Device::Cpu).unwrap(), Mode::Infer).unwrap();
        set_weights(m, if dp.as_ref().is_some_and(|d| d.rank() == 1) { 2 } else { 1 });
        let mut trainer = Trainer::new(m, Adam::new(0.05), |y: &Tensor, p: &Tensor| {
            losses::sparse_categorical_crossentropy(y, p, true)
        });
        if let Some(dp) = dp {
            trainer = trainer.data_parallel(dp);
        }
        let history =
            trainer.fit(&TensorDataset::new(x, y, batch).unwrap(), FitOptions::new().epochs(2).verbose(0)).unwrap();
        (history, m.variables().iter().map(|v| v.value_untracked().to_vec::<f32>().unwrap()).collect::<Vec<_>>())
    };
    let (x_all, y_all) = examples(0, b * world * steps);
    let single = model();
    let (_, w_ref) = train(&single, None, x_all, y_all, b * world);
    // This rank's rows of every global batch, in order.
    let (xs, ys): (Vec<Tensor>, Vec<Tensor>) = (0..steps).map(|s| examples(s * b * world + rank * b, b)).unzip();
    let x = Tensor::concat(&xs.iter().collect::<Vec<_>>(), 0).unwrap();
    let y = Tensor::concat(&ys.iter().collect::<Vec<_>>(), 0).unwrap();
    let replica = model();
    let dp = Arc::new(DataParallel::new(comm.clone()).with_bucket_bytes(64).unwrap());
    let (_, w) = train(&replica, Some(dp), x, y, b);
    for (i, (a, r)) in w.iter().zip(&w_ref).enumerate() {
        close(a, r, &format!("variable {i}"));
    }
    let flat: Vec<f32> = w.concat();
    let n = flat.len();
    let both = comm.all_gather(&Tensor::from_vec(flat, [n], &Device::Cpu).unwrap()).unwrap().to_vec::<f32>().unwrap();
    assert!(both[..n].iter().zip(&both[n..]).all(|(a, b)| a.to_bits() == b.to_bits()), "replicas differ");
}
