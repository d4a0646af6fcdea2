//! The MPI backend for real: each test starts itself under
//! `mpirun --allow-run-as-root --oversubscribe -np 2` and checks, on every rank, the
//! collectives' results, the disagreement errors, data-parallel training against one
//! process, and that a rank that stops answering makes the other time out.

mod common;

use std::process::Command;
use std::sync::Arc;
use tapegrad_distributed::{Communicator, DataParallel, Error, ReduceOp};
use tapegrad_tensor::{DType, Device, Tensor};

fn under_mpirun() -> bool {
    std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() || std::env::var_os("PMI_SIZE").is_some()
}

/// Runs test `name` of this binary on 2 ranks; returns whether mpirun succeeded and
/// what the ranks printed.
fn launch(name: &str, timeout_s: &str) -> (bool, String) {
    launch_with(name, timeout_s, &[])
}

/// [`launch`] with more environment variables for the ranks.
fn launch_with(name: &str, timeout_s: &str, env: &[(&str, &str)]) -> (bool, String) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env("TAPEGRAD_COLLECTIVE_TIMEOUT_S", timeout_s)
        .envs(env.iter().copied())
        .output()
        .expect("mpirun must be installed (apt-get install openmpi-bin libopenmpi-dev)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// In the test process: starts the ranks and requires success. Under mpirun: runs `body`.
fn on_two_ranks(name: &str, body: impl FnOnce(Arc<Communicator>)) {
    if under_mpirun() {
        let comm = Arc::new(Communicator::mpi().unwrap());
        assert_eq!(comm.world_size(), 2);
        let rank = comm.rank();
        body(comm.clone());
        // The last handle goes here: MPI is finalised before the process ends.
        drop(comm);
        println!("RANK-{rank}-PASSED");
    } else {
        let (ok, text) = launch(name, "60");
        assert!(ok && text.contains("RANK-0-PASSED") && text.contains("RANK-1-PASSED"), "{text}");
    }
}

/// Asserts that both ranks' final weights (gathered through `comm` on `device`) are
/// bit-identical.
fn assert_replicas_identical(comm: &Communicator, weights: &[Vec<f32>], device: &Device) {
    let mine: Vec<f32> = weights.concat();
    let n = mine.len();
    let both = comm.all_gather(&Tensor::from_vec(mine, [n], device).unwrap()).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(
        both[..n].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        both[n..].iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn mpi_collectives() {
    on_two_ranks("mpi_collectives", |comm| {
        let r = comm.rank();
        let x = Tensor::from_vec(vec![r as f32 + 0.5, -2.0 * r as f32, 3.0], [3], &Device::Cpu).unwrap();
        assert_eq!(comm.all_reduce(&x, ReduceOp::Sum).unwrap().to_vec::<f32>().unwrap(), vec![2.0, -2.0, 6.0]);
        assert_eq!(comm.all_reduce(&x, ReduceOp::Mean).unwrap().to_vec::<f32>().unwrap(), vec![1.0, -1.0, 3.0]);
        let mut y = x.clone();
        comm.all_reduce_in_place(&mut y, ReduceOp::Sum).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![2.0, -2.0, 6.0]);
        let x64 = Tensor::from_vec(vec![r as f64 * 0.1; 4], [2, 2], &Device::Cpu).unwrap();
        let s64 = comm.all_reduce(&x64, ReduceOp::Sum).unwrap();
        assert_eq!((s64.dims(), s64.to_vec::<f64>().unwrap()), (&[2usize, 2][..], vec![0.1; 4]));
        let xi = Tensor::from_vec(vec![r as i64 * 5 + 1], [1], &Device::Cpu).unwrap();
        assert_eq!(comm.all_reduce(&xi, ReduceOp::Sum).unwrap().to_vec::<i64>().unwrap(), vec![7]);
        assert_eq!(comm.broadcast(&x, 1).unwrap().to_vec::<f32>().unwrap(), vec![1.5, -2.0, 3.0]);
        let g = comm.all_gather(&x).unwrap();
        assert_eq!(g.dims(), &[2, 3]);
        assert_eq!(g.to_vec::<f32>().unwrap(), vec![0.5, 0.0, 3.0, 1.5, -2.0, 3.0]);
        comm.barrier().unwrap();
        // Disagreeing shapes: the same error on both ranks, and the communicator goes on.
        let dims = if r == 0 { vec![2, 3] } else { vec![6] };
        let bad = Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap();
        let err = comm.all_reduce(&bad, ReduceOp::Sum).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Mismatch { .. }) && msg.contains("[2, 3]") && msg.contains("[6]"), "{msg}");
        assert!(msg.contains(&format!("rank {r}")), "{msg}");
        assert_eq!(comm.all_reduce(&x, ReduceOp::Sum).unwrap().to_vec::<f32>().unwrap(), vec![2.0, -2.0, 6.0]);
    });
}

/// bf16 and f16 on 2 ranks. Each rank's values and the expected results are written out
/// by hand: `low_precision::expected` says why each is what it is.
#[test]
fn mpi_bf16_and_f16_collectives() {
    on_two_ranks("mpi_bf16_and_f16_collectives", |comm| {
        let r = comm.rank();
        for case in common::low_precision::cases() {
            let x = case.input(r, &Device::Cpu);
            let sum = comm.all_reduce(&x, ReduceOp::Sum).unwrap();
            assert_eq!((sum.dtype(), sum.dims()), (case.dtype, &[4usize][..]));
            case.assert_bits("all_reduce(sum)", &sum, &case.sum);
            case.assert_bits("all_reduce(mean)", &comm.all_reduce(&x, ReduceOp::Mean).unwrap(), &case.mean);
            let mut y = x.clone();
            comm.all_reduce_in_place(&mut y, ReduceOp::Mean).unwrap();
            case.assert_bits("all_reduce_in_place(mean)", &y, &case.mean);
            case.assert_bits("broadcast from 1", &comm.broadcast(&x, 1).unwrap(), &case.ranks[1]);
            let gathered = comm.all_gather(&x).unwrap();
            assert_eq!(gathered.dims(), &[2, 4]);
            case.assert_bits("all_gather", &gathered, &[case.ranks[0].clone(), case.ranks[1].clone()].concat());
        }
        // bf16 on one rank and f16 on the other: the header's dtype differs, not the shape.
        let dtype = if r == 0 { DType::BF16 } else { DType::F16 };
        let x = Tensor::ones([4], DType::F32, &Device::Cpu).unwrap().cast(dtype).unwrap();
        let err = comm.all_reduce(&x, ReduceOp::Mean).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Mismatch { .. }), "{msg}");
        for part in [&format!("rank {r}"), "all_reduce(mean)", "of a bf16 tensor of shape [4]", "of a f16 tensor"] {
            assert!(msg.contains(part), "{part:?} missing in: {msg}");
        }
    });
}

#[test]
fn mpi_data_parallel_equals_one_process_with_the_combined_batch() {
    on_two_ranks("mpi_data_parallel_equals_one_process_with_the_combined_batch", |comm| {
        let single = common::train(&DataParallel::new(Arc::new(Communicator::local().unwrap())), 8, 6);
        let dp = DataParallel::new(comm.clone()).with_bucket_bytes(40).unwrap();
        let run = common::train(&dp, 8, 6);
        common::assert_close(&run, &single);
        assert!(dp.last_step().started_during_backward >= 1, "{:?}", dp.last_step());
        assert_replicas_identical(&comm, &run.1, &Device::Cpu);
    });
}

#[test]
fn mpi_a_rank_that_stops_answering_makes_the_other_time_out() {
    if under_mpirun() {
        let comm = Communicator::mpi().unwrap();
        if comm.rank() == 1 {
            // Never joins the collective; mpirun ends this process once rank 0 is gone.
            std::thread::sleep(std::time::Duration::from_secs(30));
            std::process::exit(0);
        }
        let x = Tensor::zeros([5], DType::F32, &Device::Cpu).unwrap();
        let started = std::time::Instant::now();
        let err = comm.all_reduce(&x, ReduceOp::Sum).unwrap_err();
        println!("RANK-0-TIMEOUT after {:?}: {err}", started.elapsed());
        // The communicator's thread is stuck in MPI: end without finalising, as a
        // program that reports the error and exits would.
        std::process::exit(0);
    }
    let started = std::time::Instant::now();
    let (_, text) = launch("mpi_a_rank_that_stops_answering_makes_the_other_time_out", "2");
    assert!(text.contains("RANK-0-TIMEOUT"), "{text}");
    assert!(text.contains("rank 0: all_reduce(sum) of a f32 tensor of shape [5] did not complete within 2s"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

/// With `nccl` too, on the emulated GPU (`scripts/cuda-emu/run.sh`, whose fake libnccl can
/// fail `ncclGetUniqueId`): rank 0 cannot make the NCCL id, and rank 1 learns it from the
/// broadcast that carries the id instead of waiting there.
#[cfg(feature = "nccl")]
#[test]
fn mpi_nccl_a_failing_unique_id_on_rank_0_fails_every_rank_naming_it() {
    if under_mpirun() {
        let err = Communicator::nccl_from_mpi().unwrap_err();
        // (The failed constructor has finalised MPI: its host communicator was dropped.)
        println!("RANK-ERROR {err}");
        return;
    }
    if std::env::var_os("TAPEGRAD_EMU_DEVICES").is_none() {
        eprintln!("SKIPPED: needs the fake libnccl (TAPEGRAD_EMU_DEVICES=1 scripts/cuda-emu/run.sh)");
        return;
    }
    let started = std::time::Instant::now();
    let (_, text) = launch_with(
        "mpi_nccl_a_failing_unique_id_on_rank_0_fails_every_rank_naming_it",
        "60",
        &[("TAPEGRAD_EMU_NCCL_FAIL_UNIQUE_ID", "1")],
    );
    assert!(text.contains("RANK-ERROR nccl: rank 0: ncclGetUniqueId failed: ncclSystemError"), "{text}");
    assert!(
        text.contains("RANK-ERROR nccl: rank 1: rank 0 could not make the NCCL id (ncclGetUniqueId failed there with NCCL result 2: ncclSystemError"),
        "{text}"
    );
    // Well within the 60 s a rank waiting for a broadcast that never comes would take.
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
}

/// With `nccl` too, on the emulated GPU (`TAPEGRAD_EMU_DEVICES=2 scripts/cuda-emu/run.sh`):
/// `nccl_from_mpi`'s whole path with each rank in its own process, on the GPU of its local
/// rank, reducing through NCCL (the fake libnccl's ranks meet in shared memory): its
/// collectives, and data-parallel training equal to one process with the combined batch.
#[cfg(feature = "nccl")]
#[test]
fn mpi_nccl_ranks_in_two_processes_reduce_on_their_gpus() {
    const NAME: &str = "mpi_nccl_ranks_in_two_processes_reduce_on_their_gpus";
    if under_mpirun() {
        let comm = Arc::new(Communicator::nccl_from_mpi().unwrap());
        let r = comm.rank();
        let dev = Device::Cuda(r);
        assert_eq!((comm.world_size(), comm.backend(), comm.reduction_device()), (2, "nccl", Some(dev)));
        let x = Tensor::from_vec(vec![r as f32 + 0.5, -2.0 * r as f32, 3.0], [3], &dev).unwrap();
        let sum = comm.all_reduce(&x, ReduceOp::Sum).unwrap();
        assert_eq!(sum.device(), dev);
        assert_eq!(sum.to_vec::<f32>().unwrap(), vec![2.0, -2.0, 6.0]);
        assert_eq!(comm.all_reduce(&x, ReduceOp::Mean).unwrap().to_vec::<f32>().unwrap(), vec![1.0, -1.0, 3.0]);
        let x64 = Tensor::from_vec(vec![r as f64 * 0.25, 1.5], [2], &dev).unwrap();
        assert_eq!(comm.all_reduce(&x64, ReduceOp::Sum).unwrap().to_vec::<f64>().unwrap(), vec![0.25, 3.0]);
        assert_eq!(comm.broadcast(&x, 1).unwrap().to_vec::<f32>().unwrap(), vec![1.5, -2.0, 3.0]);
        let g = comm.all_gather(&x).unwrap();
        assert_eq!(g.dims(), &[2, 3]);
        assert_eq!(g.to_vec::<f32>().unwrap(), vec![0.5, 0.0, 3.0, 1.5, -2.0, 3.0]);
        // Disagreeing shapes: the same error on both ranks (the header exchange), and the
        // communicator goes on.
        let dims = if r == 0 { vec![2, 3] } else { vec![6] };
        let err = comm.all_reduce(&Tensor::zeros(dims, DType::F32, &dev).unwrap(), ReduceOp::Sum).unwrap_err();
        assert!(matches!(err, Error::Mismatch { .. }), "{err}");
        let single = common::train_on(&DataParallel::new(Arc::new(Communicator::local().unwrap())), 8, 6, &dev);
        let dp = DataParallel::new(comm.clone()).with_bucket_bytes(40).unwrap();
        let run = common::train_on(&dp, 8, 6, &dev);
        common::assert_close(&run, &single);
        assert_replicas_identical(&comm, &run.1, &dev);
        drop((dp, comm));
        println!("RANK-{r}-PASSED");
        return;
    }
    if std::env::var_os("TAPEGRAD_EMU_DEVICES").is_none() {
        eprintln!(
            "SKIPPED: needs the emulated GPU and its fake libnccl (TAPEGRAD_EMU_DEVICES=2 scripts/cuda-emu/run.sh)"
        );
        return;
    }
    let (ok, text) = launch(NAME, "60");
    assert!(ok && text.contains("RANK-0-PASSED") && text.contains("RANK-1-PASSED"), "{text}");
}

/// With `nccl` too, on the emulated GPU (`TAPEGRAD_EMU_DEVICES=2 scripts/cuda-emu/run.sh`):
/// bf16 and f16 collectives between ranks in two processes, through the fake libnccl's
/// shared-memory cliques (`ncclBfloat16`/`ncclFloat16`, summed in float in rank order and
/// rounded once: `common::low_precision`'s hand-worked results). Needs CUDA bf16/f16
/// tensors (the tensor crate's CUDA backend).
#[cfg(feature = "nccl")]
#[test]
fn mpi_nccl_bf16_and_f16_in_two_processes() {
    const NAME: &str = "mpi_nccl_bf16_and_f16_in_two_processes";
    if under_mpirun() {
        let comm = Communicator::nccl_from_mpi().unwrap();
        let r = comm.rank();
        let dev = Device::Cuda(r);
        for case in common::low_precision::cases() {
            let x = case.input(r, &dev);
            case.assert_bits("all_reduce(sum)", &comm.all_reduce(&x, ReduceOp::Sum).unwrap(), &case.sum);
            case.assert_bits("all_reduce(mean)", &comm.all_reduce(&x, ReduceOp::Mean).unwrap(), &case.mean);
            case.assert_bits("broadcast from 1", &comm.broadcast(&x, 1).unwrap(), &case.ranks[1]);
            let gathered = comm.all_gather(&x).unwrap();
            assert_eq!((gathered.device(), gathered.dims()), (dev, &[2usize, 4][..]));
            case.assert_bits("all_gather", &gathered, &[case.ranks[0].clone(), case.ranks[1].clone()].concat());
        }
        drop(comm);
        println!("RANK-{r}-PASSED");
        return;
    }
    if std::env::var_os("TAPEGRAD_EMU_DEVICES").is_none() {
        eprintln!(
            "SKIPPED: needs the emulated GPU and its fake libnccl (TAPEGRAD_EMU_DEVICES=2 scripts/cuda-emu/run.sh)"
        );
        return;
    }
    let (ok, text) = launch(NAME, "60");
    assert!(ok && text.contains("RANK-0-PASSED") && text.contains("RANK-1-PASSED"), "{text}");
}

/// With `nccl` too, on the emulated GPU (`TAPEGRAD_EMU_DEVICES=2 scripts/cuda-emu/run.sh`):
/// rank 1's process passes the header exchange of its second all-reduce and dies inside the
/// NCCL call (`TAPEGRAD_EMU_NCCL_DIE`). The fake libnccl's shared-memory cliques wait at the
/// call, so rank 0's call blocks inside NCCL (for up to 120 s, the fake's own limit); its
/// watchdog aborts the communicator after the collective timeout (2 s), which wakes the
/// call, and rank 0 gets the timeout naming its collective. Rank 0 then exits with an error
/// (mpirun ends the dead rank).
#[cfg(feature = "nccl")]
#[test]
fn mpi_nccl_a_call_blocked_on_a_dead_process_is_aborted_after_the_timeout() {
    const NAME: &str = "mpi_nccl_a_call_blocked_on_a_dead_process_is_aborted_after_the_timeout";
    if under_mpirun() {
        let comm = Communicator::nccl_from_mpi().unwrap();
        let r = comm.rank();
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3], &Device::Cuda(r)).unwrap();
        assert_eq!(comm.all_reduce(&x, ReduceOp::Sum).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0]);
        let started = std::time::Instant::now();
        // Rank 1 never returns from this call.
        let err = comm.all_reduce(&x, ReduceOp::Sum).unwrap_err();
        println!("RANK-{r}-ABORTED after {:?}: {err}", started.elapsed());
        std::process::exit(1);
    }
    if std::env::var_os("TAPEGRAD_EMU_DEVICES").is_none() {
        eprintln!(
            "SKIPPED: needs the emulated GPU and its fake libnccl (TAPEGRAD_EMU_DEVICES=2 scripts/cuda-emu/run.sh)"
        );
        return;
    }
    let started = std::time::Instant::now();
    let env = [("TAPEGRAD_EMU_NCCL_DIE", "1:2"), ("TAPEGRAD_EMU_NCCL_TIMEOUT_S", "120")];
    let (_, text) = launch_with(NAME, "2", &env);
    assert!(text.contains("RANK-0-ABORTED"), "{text}");
    assert!(text.contains("rank 0: all_reduce(sum) of a f32 tensor of shape [3] did not complete within 2s"), "{text}");
    // The watchdog's 2 s, not the fake's 120 s.
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "{:?}\n{text}", started.elapsed());
}
