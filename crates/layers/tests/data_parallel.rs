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
