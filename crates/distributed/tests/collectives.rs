//! The collectives' semantics on in-process groups of threads (no MPI needed): results
//! against sums computed here, disagreement errors on every rank, and a dead rank's
//! timeout.

use std::time::{Duration, Instant};
use tapegrad_distributed::{Communicator, Error, ReduceOp, ThreadGroup};
use tapegrad_tensor::{DType, Device, Tensor};

/// Runs `f(rank, comm)` on one thread per rank and returns the results in rank order.
fn on_ranks<T: Send>(n: usize, timeout: Duration, f: impl Fn(usize, Communicator) -> T + Sync) -> Vec<T> {
    let comms = ThreadGroup::communicators(n, timeout).unwrap();
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = comms.into_iter().enumerate().map(|(r, c)| s.spawn(move || f(r, c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap()
}

#[test]
fn all_reduce_sum_and_mean_match_host_sums() {
    let results = on_ranks(3, Duration::from_secs(20), |rank, comm| {
        assert_eq!((comm.rank(), comm.world_size(), comm.backend()), (rank, 3, "threads"));
        let x = t((0..6).map(|i| (i * 10 + rank) as f32 * 0.5).collect(), &[2, 3]);
        let sum = comm.all_reduce(&x, ReduceOp::Sum).unwrap();
        let mean = comm.all_reduce(&x, ReduceOp::Mean).unwrap();
        let xi = Tensor::from_vec(vec![rank as i64 + 1, -7], [2], &Device::Cpu).unwrap();
        let isum = comm.all_reduce(&xi, ReduceOp::Sum).unwrap();
        let x64 = Tensor::from_vec(vec![rank as f64 * 0.25], [1], &Device::Cpu).unwrap();
        let mean64 = comm.all_reduce(&x64, ReduceOp::Mean).unwrap();
        assert_eq!(sum.dims(), &[2, 3]);
        (
            sum.to_vec::<f32>().unwrap(),
            mean.to_vec::<f32>().unwrap(),
            isum.to_vec::<i64>().unwrap(),
            mean64.to_vec::<f64>().unwrap(),
        )
    });
    let expected_sum: Vec<f32> = (0..6).map(|i| (0..3).map(|r| (i * 10 + r) as f32 * 0.5).sum()).collect();
    for (sum, mean, isum, mean64) in &results {
        assert_eq!(sum, &expected_sum);
        let expected_mean: Vec<f32> = expected_sum.iter().map(|s| s / 3.0).collect();
        assert_eq!(mean, &expected_mean);
        assert_eq!(isum, &vec![6, -21]);
        assert_eq!(mean64, &vec![0.25]);
    }
}

#[test]
fn broadcast_and_all_gather() {
    let results = on_ranks(2, Duration::from_secs(20), |rank, comm| {
        let x = t(vec![rank as f32 + 1.0, -(rank as f32)], &[2]);
        let from1 = comm.broadcast(&x, 1).unwrap().to_vec::<f32>().unwrap();
        let gathered = comm.all_gather(&x).unwrap();
        comm.barrier().unwrap();
        (from1, gathered.dims().to_vec(), gathered.to_vec::<f32>().unwrap())
    });
    for (from1, dims, gathered) in results {
        assert_eq!(from1, vec![2.0, -1.0]);
        assert_eq!(dims, vec![2, 2]);
        assert_eq!(gathered, vec![1.0, 0.0, 2.0, -1.0]);
    }
}

#[test]
fn shape_disagreement_is_an_error_on_every_rank_naming_both_shapes() {
    let results = on_ranks(2, Duration::from_secs(20), |rank, comm| {
        let x = t(vec![1.0; 6], if rank == 0 { &[2, 3] } else { &[3, 2] });
        let err = comm.all_reduce(&x, ReduceOp::Sum).unwrap_err();
        // The communicator stays usable after a disagreement.
        let ok = comm.all_reduce(&t(vec![1.0], &[1]), ReduceOp::Sum).unwrap().to_vec::<f32>().unwrap();
        (err, ok)
    });
    for (rank, (err, ok)) in results.into_iter().enumerate() {
        assert!(matches!(err, Error::Mismatch { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("rank {rank}")), "{msg}");
        assert!(msg.contains("[2, 3]") && msg.contains("[3, 2]") && msg.contains("all_reduce(sum)"), "{msg}");
        assert_eq!(ok, vec![2.0]);
    }
}

#[test]
fn dtype_collective_and_root_disagreements_are_errors() {
    let results = on_ranks(2, Duration::from_secs(20), |rank, comm| {
        let x = t(vec![1.0, 2.0], &[2]);
        let x64 = x.cast(DType::F64).unwrap();
        let dtype = comm.all_reduce(if rank == 0 { &x } else { &x64 }, ReduceOp::Sum).unwrap_err().to_string();
        let collective =
            if rank == 0 { comm.all_reduce(&x, ReduceOp::Mean).unwrap_err() } else { comm.all_gather(&x).unwrap_err() }
                .to_string();
        let root = comm.broadcast(&x, rank).unwrap_err().to_string();
        let outside = comm.broadcast(&x, 5).unwrap_err().to_string();
        (dtype, collective, root, outside)
    });
    for (dtype, collective, root, outside) in results {
        assert!(dtype.contains("f32") && dtype.contains("f64"), "{dtype}");
        assert!(collective.contains("all_reduce(mean)") && collective.contains("all_gather"), "{collective}");
        assert!(root.contains("root 0") && root.contains("root 1"), "{root}");
        assert!(outside.contains("root 5") && outside.contains("2 ranks"), "{outside}");
    }
}

#[test]
fn a_dead_rank_makes_the_others_time_out_with_an_error() {
    let mut comms = ThreadGroup::communicators(2, Duration::from_millis(400)).unwrap();
    let survivor = comms.remove(0);
    drop(comms); // rank 1 is gone before the collective
    let started = Instant::now();
    let err = survivor.all_reduce(&t(vec![1.0; 4], &[4]), ReduceOp::Sum).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(err, Error::Timeout { rank: 0, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("rank 0") && msg.contains("all_reduce(sum)") && msg.contains("[4]") && msg.contains("f32"),
        "{msg}"
    );
    // Later collectives fail at once rather than queue behind the stuck one.
    let again = survivor.barrier().unwrap_err().to_string();
    assert!(again.contains("timed out"), "{again}");
}

#[test]
fn a_dead_rank_noticed_by_the_transport_first_is_the_same_timeout_error() {
    // The group's rendezvous gives up after 200 ms, the caller's wait only after 30 s: the
    // transport's own timeout must still surface as a Timeout naming the collective.
    let mut comms = ThreadGroup::communicators(2, Duration::from_millis(200)).unwrap();
    let survivor = comms.remove(0).with_timeout(Duration::from_secs(30));
    drop(comms);
    let started = Instant::now();
    let err = survivor.broadcast(&t(vec![1.0; 6], &[2, 3]), 0).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());
    assert!(matches!(err, Error::Timeout { rank: 0, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("broadcast") && msg.contains("[2, 3]") && msg.contains("200ms"), "{msg}");
    assert!(survivor.barrier().unwrap_err().to_string().contains("timed out"));
}

#[test]
fn local_world_returns_its_input() {
    let comm = Communicator::local().unwrap();
    assert_eq!((comm.rank(), comm.world_size()), (0, 1));
    let x = t(vec![1.5, -2.0], &[1, 2]);
    assert_eq!(comm.all_reduce(&x, ReduceOp::Mean).unwrap().to_vec::<f32>().unwrap(), vec![1.5, -2.0]);
    assert_eq!(comm.broadcast(&x, 0).unwrap().dims(), &[1, 2]);
    assert_eq!(comm.all_gather(&x).unwrap().dims(), &[1, 1, 2]);
    comm.barrier().unwrap();
    assert!(comm.broadcast(&x, 1).unwrap_err().to_string().contains("root 1"));
}

/// bf16 and f16 over 3 ranks: summed in f32 and rounded once, not in their own precision.
/// Rank 0 holds 1 and ranks 1 and 2 hold half a unit in the last place of 1 (2^-8 in bf16,
/// 2^-11 in f16): a sum rounded at each step would stay at 1 (1 + half an ulp is a tie, to
/// even), the f32 sum 1 + one ulp is exact. The mean (1 + ulp) / 3 is 43/128 in bf16 (exact)
/// and 1367 * 2^-12 in f16 (1025/3072 rounded to the nearest multiple of 2^-12).
/// Broadcast and all-gather move the values bit for bit (a NaN's payload and -0 included).
#[test]
fn bf16_and_f16_are_reduced_in_f32_and_rounded_once() {
    use tapegrad_tensor::half::{bf16, f16};
    let results = on_ranks(3, Duration::from_secs(20), |rank, comm| {
        let b = [1.0f32, 1.0 / 256.0, 1.0 / 256.0][rank];
        let h = [1.0f32, 1.0 / 2048.0, 1.0 / 2048.0][rank];
        let xb = Tensor::from_vec(vec![bf16::from_f32(b), bf16::from_bits(0x7fa1), bf16::NEG_ZERO], [3], &Device::Cpu)
            .unwrap();
        let xh = Tensor::from_vec(vec![f16::from_f32(h)], [1], &Device::Cpu).unwrap();
        let sum_b = comm.all_reduce(&xb.narrow(0, 0, 1).unwrap(), ReduceOp::Sum).unwrap().to_vec::<bf16>().unwrap();
        let mean_b = comm.all_reduce(&xb.narrow(0, 0, 1).unwrap(), ReduceOp::Mean).unwrap().to_vec::<bf16>().unwrap();
        let sum_h = comm.all_reduce(&xh, ReduceOp::Sum).unwrap().to_vec::<f16>().unwrap();
        let mean_h = comm.all_reduce(&xh, ReduceOp::Mean).unwrap().to_vec::<f16>().unwrap();
        let from2 = comm.broadcast(&xb, 2).unwrap();
        let all = comm.all_gather(&xb).unwrap();
        assert_eq!((from2.dtype(), all.dtype(), all.dims()), (DType::BF16, DType::BF16, &[3usize, 3][..]));
        let bits = |t: &Tensor| t.to_vec::<bf16>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (sum_b[0].to_bits(), mean_b[0].to_bits(), sum_h[0].to_bits(), mean_h[0].to_bits(), bits(&from2), bits(&all))
    });
    for (sum_b, mean_b, sum_h, mean_h, from2, all) in results {
        assert_eq!(sum_b, bf16::from_f32(1.0078125).to_bits());
        assert_eq!(mean_b, bf16::from_f32(0.3359375).to_bits());
        assert_eq!(sum_h, f16::from_f64(1.0009765625).to_bits());
        assert_eq!(mean_h, f16::from_f64(0.333740234375).to_bits());
        assert_eq!(from2, vec![0x3b80, 0x7fa1, 0x8000]);
        assert_eq!(
            all,
            [vec![0x3f80, 0x7fa1, 0x8000], vec![0x3b80, 0x7fa1, 0x8000], vec![0x3b80, 0x7fa1, 0x8000]].concat()
        );
    }
}

#[test]
fn only_nccl_communicators_can_be_aborted() {
    let err = Communicator::local().unwrap().abort().unwrap_err();
    assert!(matches!(err, Error::Invalid { rank: 0, collective: "abort", .. }), "{err:?}");
    assert!(err.to_string().contains("only NCCL communicators can be aborted"), "{err}");
}

#[test]
fn all_reduce_in_place_replaces_the_tensor_with_the_result() {
    let results = on_ranks(2, Duration::from_secs(20), |rank, comm| {
        let mut x = t(vec![rank as f32 + 1.0, -2.0 * rank as f32], &[2]);
        let kept = x.clone();
        comm.all_reduce_in_place(&mut x, ReduceOp::Sum).unwrap();
        let sum = x.to_vec::<f32>().unwrap();
        comm.all_reduce_in_place(&mut x, ReduceOp::Mean).unwrap();
        // A disagreement leaves the tensor as it was.
        let mut bad = t(vec![1.0; rank + 1], &[rank + 1]);
        assert!(matches!(comm.all_reduce_in_place(&mut bad, ReduceOp::Sum), Err(Error::Mismatch { .. })));
        assert_eq!(bad.to_vec::<f32>().unwrap(), vec![1.0; rank + 1]);
        (sum, x.to_vec::<f32>().unwrap(), kept.to_vec::<f32>().unwrap(), x.dims().to_vec())
    });
    for (rank, (sum, mean, kept, dims)) in results.into_iter().enumerate() {
        assert_eq!(sum, vec![3.0, -2.0]);
        assert_eq!(mean, vec![3.0, -2.0], "the mean of two equal sums");
        assert_eq!(kept, vec![rank as f32 + 1.0, -2.0 * rank as f32], "a clone taken before keeps its values");
        assert_eq!(dims, vec![2]);
    }
}
