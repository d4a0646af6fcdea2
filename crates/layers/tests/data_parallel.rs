//! SyncBatchNormalization and data-parallel `Trainer::fit` on 2 ranks of an in-process
//! group, against one process with the combined batch (the same checks run under mpirun
//! in `mpi.rs`).

mod distributed;

use std::sync::Arc;
use std::time::Duration;
use tapegrad_distributed::{Communicator, ThreadGroup};

fn on_two_threads(f: fn(Arc<Communicator>)) {
    let comms = ThreadGroup::communicators(2, Duration::from_secs(60)).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = comms.into_iter().map(|c| s.spawn(move || f(Arc::new(c)))).collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn sync_batch_norm_equals_batch_norm_on_the_combined_batch() {
    on_two_threads(distributed::sync_batch_norm_matches_combined_batch);
}

#[test]
fn data_parallel_fit_equals_one_process_with_the_combined_batch() {
    on_two_threads(distributed::fit_matches_combined_batch);
}

#[test]
fn data_parallel_fit_refuses_cuda_graphs() {
    use tapegrad_distributed::DataParallel;
    use tapegrad_layers::losses::CrossEntropy;
    use tapegrad_layers::optimizers::Sgd;
    use tapegrad_layers::training::{FitOptions, TensorDataset, Trainer};
    use tapegrad_layers::{Dense, Sequential};
    use tapegrad_tensor::{Device, Tensor};

    let model = Sequential::new().add(Dense::new(2));
    let x = Tensor::zeros([4, 3], tapegrad_tensor::DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::from_vec(vec![0i64, 1, 0, 1], [4], &Device::Cpu).unwrap();
    let data = TensorDataset::new(x, y, 2).unwrap();
    let loss = CrossEntropy::from_logits();
    let mut trainer = Trainer::new(&model, Sgd::new(0.1), move |y: &Tensor, p: &Tensor| loss.sparse(y, p))
        .data_parallel(Arc::new(DataParallel::new(Arc::new(Communicator::local().unwrap()))));
    let options = FitOptions::new().epochs(1).verbose(0).cuda_graph(true);
    let err = trainer.fit(&data, options).unwrap_err().to_string();
    assert!(err.contains("cuda_graph") && err.contains("data_parallel"), "{err}");
}
