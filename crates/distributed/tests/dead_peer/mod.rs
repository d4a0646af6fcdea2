//! A rank that dies after the header exchange, on the emulated GPUs: the fake libnccl in
//! queued mode (`TAPEGRAD_EMU_NCCL_QUEUE=1`: a collective waits on the stream for its peers,
//! as on a GPU) with `TAPEGRAD_EMU_NCCL_DIE=1:<n>` (rank 1's n-th collective never returns,
//! as if its process died after its host had exchanged the header). Only the watchdog can
//! then end rank 0's wait: without it the host read (or the communicator's destruction)
//! hangs forever.
//!
//! Also: a collective queued without the watchdog's event after it
//! (`TAPEGRAD_EMU_NCCL_UNTRACKED`: recording the event fails), which nothing can tell done;
//! and, with collectives that block at the call (`TAPEGRAD_EMU_NCCL_QUEUE=0`, as the
//! shared-memory cliques always do), a call blocked inside NCCL waiting for the dead rank:
//! the watchdog aborts it after the communicator's timeout (not the fake's own, 120 s
//! here), or another thread's `Communicator::abort` does, and the blocked thread gets an
//! error naming its collective.
//!
//! Each scenario runs in a child process (this test binary, filtered to one ignored test):
//! the dead rank's thread stays stuck and rank 0's stream stays marked failed for the rest
//! of the process, and a hang must fail the test after a limit instead of stalling the run.

use crate::group;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tapegrad_distributed::{Communicator, Error, ReduceOp};
use tapegrad_tensor::{Device, Tensor};

/// How long a collective may take in the children before the watchdog aborts it.
const TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a child may run before it counts as hung (its own work takes a few seconds).
const HANG: Duration = Duration::from_secs(90);

/// Runs the ignored test `child` in a child process with rank 1 dying at its `die`-th
/// collective; fails if it fails or has not ended within [`HANG`].
fn run_child(child: &str, die: u32) {
    run_child_with(child, ("TAPEGRAD_EMU_NCCL_DIE", format!("1:{die}")));
}

/// [`run_child`] with the fake libnccl's test hook `hook` (variable, value) instead.
fn run_child_with(child: &str, hook: (&str, String)) {
    run_child_env(child, &[("TAPEGRAD_EMU_NCCL_QUEUE", "1".into()), hook]);
}

/// Runs rank 1 dying at its second collective with collectives that block at the call, for
/// at most 120 s in the fake libnccl (far longer than a test allows).
fn run_blocking_child(child: &str) {
    run_child_env(
        child,
        &[
            ("TAPEGRAD_EMU_NCCL_QUEUE", "0".into()),
            ("TAPEGRAD_EMU_NCCL_DIE", "1:2".into()),
            ("TAPEGRAD_EMU_NCCL_TIMEOUT_S", "120".into()),
        ],
    );
}

/// Runs the ignored test `child` in a child process with the environment `env`; fails if it
/// fails or has not ended within [`HANG`].
fn run_child_env(child: &str, env: &[(&str, String)]) {
    if std::env::var_os("TAPEGRAD_EMU_DEVICES").is_none() {
        eprintln!("SKIPPED {child}: needs the fake libnccl's queued mode and its test hooks");
        return;
    }
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{child}-{}.log", std::process::id()));
    let out = std::fs::File::create(&log).unwrap();
    let mut process = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--ignored", "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("TAPEGRAD_EMU_NCCL_TRACE")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = process.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > HANG {
            process.kill().unwrap();
            process.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    match status {
        None => panic!("{child} hung: killed after {HANG:?}\n{output}"),
        Some(s) => assert!(s.success() && output.contains("1 passed"), "{child} failed ({s}):\n{output}"),
    }
}

/// Rank 0 and rank 1 of a group with the short timeout.
fn two_ranks(test: &str) -> (Communicator, Communicator) {
    let mut comms = group(test, 2).expect("REQUIRE_GPU=1 makes group() fail instead").into_iter();
    let mut next = || comms.next().unwrap().with_timeout(TIMEOUT);
    (next(), next())
}

fn input(rank: usize) -> Tensor {
    Tensor::from_vec(vec![1.0f32 + rank as f32, 2.0, 3.0], [3], &Device::Cuda(rank)).unwrap()
}

/// Starts rank 1 on its own thread: one all-reduce, then one that never returns (it dies
/// inside the NCCL call, after the header exchange). The thread is never joined.
fn rank1_dies_at_its_second_collective(comm: Communicator) -> std::sync::mpsc::Receiver<Vec<f32>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let x = input(1);
        tx.send(comm.all_reduce(&x, ReduceOp::Sum).unwrap().to_vec::<f32>().unwrap()).unwrap();
        let _ = comm.all_reduce(&x, ReduceOp::Sum);
        unreachable!("TAPEGRAD_EMU_NCCL_DIE=1:2 keeps rank 1 in its second collective");
    });
    rx
}

/// Whether `e` is (or carries) a timeout naming rank 0's all-reduce of the f32 [3] tensor.
fn names_the_timed_out_all_reduce(msg: &str) {
    for part in ["rank 0", "all_reduce(sum)", "f32", "[3]", "did not complete within 1.5s"] {
        assert!(msg.contains(part), "{part:?} missing in: {msg}");
    }
}

#[test]
fn a_rank_that_dies_after_the_header_exchange_fails_the_others_host_read() {
    run_child("dead_peer::child_host_read", 2);
}

#[test]
#[ignore = "run in a child process by a_rank_that_dies_after_the_header_exchange_fails_the_others_host_read"]
fn child_host_read() {
    let (c0, c1) = two_ranks("dead_peer::child_host_read");
    let rank1 = rank1_dies_at_its_second_collective(c1);
    let x = input(0);
    // Queued mode works when both ranks join: the read waits on the stream for rank 1.
    let first = c0.all_reduce(&x, ReduceOp::Sum).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(first, vec![3.0, 4.0, 6.0]);
    assert_eq!(rank1.recv().unwrap(), first);
    // Rank 1 passes this header exchange, then dies: the all-reduce is queued on rank 0's
    // stream and never completes; the read behind it fails once the watchdog aborts.
    let second = c0.all_reduce(&x, ReduceOp::Sum).unwrap();
    let start = Instant::now();
    let err = second.to_vec::<f32>().unwrap_err();
    let waited = start.elapsed();
    assert!(waited >= TIMEOUT.mul_f64(0.9) && waited < TIMEOUT + Duration::from_secs(10), "{waited:?}: {err}");
    names_the_timed_out_all_reduce(&err.to_string());
    let tapegrad_tensor::Error::External(inner) = &err else { panic!("not the collective's error: {err:?}") };
    assert!(matches!(inner.downcast_ref::<Error>(), Some(Error::Timeout { rank: 0, .. })), "{err:?}");
    // The next call on the communicator reports the same timeout (after announcing its
    // refusal, which the dead rank never answers: one more timeout).
    let next = c0.all_reduce(&x, ReduceOp::Sum).unwrap_err();
    assert!(matches!(next, Error::Timeout { rank: 0, .. }), "{next:?}");
    names_the_timed_out_all_reduce(&next.to_string());
    let barrier = c0.barrier().unwrap_err();
    assert!(matches!(barrier, Error::Timeout { rank: 0, .. }), "{barrier:?}");
    // What the stream computed after the aborted collective is not to be read either.
    let later = x.add(&x).unwrap().to_vec::<f32>().unwrap_err();
    names_the_timed_out_all_reduce(&later.to_string());
    // The communicator was aborted, not destroyed: dropping it does not wait for rank 1.
    let start = Instant::now();
    drop(c0);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

#[test]
fn dropping_a_rank_whose_peer_died_does_not_wait_forever() {
    run_child("dead_peer::child_drop", 2);
}

#[test]
#[ignore = "run in a child process by dropping_a_rank_whose_peer_died_does_not_wait_forever"]
fn child_drop() {
    let (c0, c1) = two_ranks("dead_peer::child_drop");
    let rank1 = rank1_dies_at_its_second_collective(c1);
    let x = input(0);
    assert_eq!(c0.all_reduce(&x, ReduceOp::Sum).unwrap().to_vec::<f32>().unwrap(), rank1.recv().unwrap());
    // Queued, never completed, not read: dropping the rank right away must not leave
    // ncclCommDestroy waiting for rank 1 forever; it waits the timeout, then aborts.
    let _pending = c0.all_reduce(&x, ReduceOp::Sum).unwrap();
    let start = Instant::now();
    drop(c0);
    let waited = start.elapsed();
    assert!(waited >= TIMEOUT.mul_f64(0.9) && waited < TIMEOUT + Duration::from_secs(10), "{waited:?}");
}

#[test]
fn a_collective_the_watchdog_cannot_track_fails_the_streams_later_reads() {
    run_child_with("dead_peer::child_untracked", ("TAPEGRAD_EMU_NCCL_UNTRACKED", "0:1".into()));
}

#[test]
#[ignore = "run in a child process by a_collective_the_watchdog_cannot_track_fails_the_streams_later_reads"]
fn child_untracked() {
    let (c0, c1) = two_ranks("dead_peer::child_untracked");
    // Rank 1's part fails or completes, depending on whether rank 0 aborted first.
    let rank1 = std::thread::spawn(move || {
        let _ = c1.all_reduce(&input(1), ReduceOp::Sum);
        c1
    });
    let x = input(0);
    // The all-reduce is queued on rank 0's stream, but the event after it cannot be recorded:
    // the call fails and the communicator is aborted.
    let err = c0.all_reduce(&x, ReduceOp::Sum).unwrap_err().to_string();
    assert!(err.contains("rank 0") && err.contains("cuEventRecord failed"), "{err}");
    // Nothing tells when that collective is done, so the stream's later results are not to
    // be read: the read fails naming it instead of returning what may be garbage.
    let later = x.add(&x).unwrap().to_vec::<f32>().unwrap_err().to_string();
    for part in ["rank 0", "all_reduce(sum)", "[3]", "still queued on cuda:0", "aborted", "cuEventRecord failed"] {
        assert!(later.contains(part), "{part:?} missing in: {later}");
    }
    drop(rank1.join().unwrap());
}

#[test]
fn a_call_blocked_inside_nccl_is_aborted_by_the_watchdog_within_the_timeout() {
    run_blocking_child("dead_peer::child_blocked_call");
}

#[test]
#[ignore = "run in a child process by a_call_blocked_inside_nccl_is_aborted_by_the_watchdog_within_the_timeout"]
fn child_blocked_call() {
    let (c0, c1) = two_ranks("dead_peer::child_blocked_call");
    let rank1 = rank1_dies_at_its_second_collective(c1);
    let x = input(0);
    // Blocking mode works when both ranks join: each waits at the call for the other.
    let first = c0.all_reduce(&x, ReduceOp::Sum).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(rank1.recv().unwrap(), first);
    // Rank 1 passes the header exchange and dies inside its NCCL call: rank 0's call blocks
    // in the fake libnccl waiting for it, until the watchdog aborts the communicator.
    let start = Instant::now();
    let err = c0.all_reduce(&x, ReduceOp::Sum).unwrap_err();
    let waited = start.elapsed();
    assert!(waited >= TIMEOUT.mul_f64(0.9) && waited < TIMEOUT + Duration::from_secs(10), "{waited:?}: {err}");
    assert!(matches!(err, Error::Timeout { rank: 0, .. }), "{err:?}");
    names_the_timed_out_all_reduce(&err.to_string());
    // Later calls report the same timeout, and what the stream computes is not to be read.
    let next = c0.all_reduce(&x, ReduceOp::Sum).unwrap_err();
    assert!(matches!(next, Error::Timeout { rank: 0, .. }), "{next:?}");
    names_the_timed_out_all_reduce(&x.add(&x).unwrap().to_vec::<f32>().unwrap_err().to_string());
    // Aborted, not destroyed: dropping it does not wait for rank 1.
    let start = Instant::now();
    drop(c0);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

#[test]
fn another_threads_abort_wakes_a_call_blocked_inside_nccl() {
    run_blocking_child("dead_peer::child_abort_from_another_thread");
}

#[test]
#[ignore = "run in a child process by another_threads_abort_wakes_a_call_blocked_inside_nccl"]
fn child_abort_from_another_thread() {
    let (c0, c1) = two_ranks("dead_peer::child_abort_from_another_thread");
    // The watchdog would abort after a minute: the other thread's abort comes first.
    let c0 = c0.with_timeout(Duration::from_secs(60));
    let rank1 = rank1_dies_at_its_second_collective(c1);
    let x = input(0);
    assert_eq!(c0.all_reduce(&x, ReduceOp::Sum).unwrap().to_vec::<f32>().unwrap(), rank1.recv().unwrap());
    const ABORT_AFTER: Duration = Duration::from_millis(500);
    let (err, waited) = std::thread::scope(|s| {
        let c0 = &c0;
        let start = Instant::now();
        let aborter = s.spawn(move || {
            std::thread::sleep(ABORT_AFTER);
            c0.abort().unwrap();
        });
        let err = c0.all_reduce(&x, ReduceOp::Sum).unwrap_err();
        let waited = start.elapsed();
        aborter.join().unwrap();
        (err, waited)
    });
    // It returned because of the abort (not the fake's 120 s, nor the 60 s timeout).
    assert!(waited >= ABORT_AFTER && waited < Duration::from_secs(10), "{waited:?}: {err}");
    let msg = err.to_string();
    for part in ["rank 0", "all_reduce(sum)", "f32", "[3]", "aborted during the call", "aborted by Communicator::abort"]
    {
        assert!(msg.contains(part), "{part:?} missing in: {msg}");
    }
    let start = Instant::now();
    drop(c0);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}
