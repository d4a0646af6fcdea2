//! SyncBatchNormalization and data-parallel `Trainer::fit` for real under
//! `mpirun --allow-run-as-root --oversubscribe -np 2` (each test starts itself there).

mod distributed;

use std::process::Command;
use std::sync::Arc;
use tapegrad_distributed::Communicator;

fn on_two_ranks(name: &str, f: fn(Arc<Communicator>)) {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() || std::env::var_os("PMI_SIZE").is_some() {
        let comm = Arc::new(Communicator::mpi().unwrap());
        let rank = comm.rank();
        f(comm);
        println!("RANK-{rank}-PASSED");
        return;
    }
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env("TAPEGRAD_COLLECTIVE_TIMEOUT_S", "60")
        .output()
        .expect("mpirun must be installed (apt-get install openmpi-bin libopenmpi-dev)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("RANK-0-PASSED") && text.contains("RANK-1-PASSED"), "{text}");
}

#[test]
fn mpi_sync_batch_norm_equals_batch_norm_on_the_combined_batch() {
    on_two_ranks(
        "mpi_sync_batch_norm_equals_batch_norm_on_the_combined_batch",
        distributed::sync_batch_norm_matches_combined_batch,
    );
}

#[test]
fn mpi_data_parallel_fit_equals_one_process_with_the_combined_batch() {
    on_two_ranks(
        "mpi_data_parallel_fit_equals_one_process_with_the_combined_batch",
        distributed::fit_matches_combined_batch,
    );
}
