//! The NCCL backend (feature `nccl`): collectives and data-parallel training over GPUs of
//! one process. CI runs it on the emulated GPU with two devices and the fake libnccl
//! (`TAPEGRAD_EMU_DEVICES=2 scripts/cuda-emu/run.sh`), where the fake also records when each
//! collective was queued; scripts/gpu-check.sh runs the single-rank test on a real GPU.
//!
//! On the emulator the fake libnccl runs in queued mode (`TAPEGRAD_EMU_NCCL_QUEUE=1`, set
//! here unless the environment sets it; `0` runs the tests with collectives that wait at
//! the call): a collective completes on the stream once every rank's part has arrived, as
//! on a GPU, so reads wait on the stream and the watchdog's events pass late.
//! `dead_peer` checks what happens when a rank dies after the header exchange.
//!
//! Without enough CUDA devices or libnccl a test prints why and passes; `REQUIRE_GPU=1`
//! turns that into a failure.

mod common;
mod dead_peer;

use std::sync::{Arc, Once};
use tapegrad_distributed::{Communicator, DataParallel, Error, ReduceOp};
use tapegrad_tensor::{custom_gradient, DType, Device, GradientTape, Tensor, Variable};

/// The fake libnccl's trace of queued collectives (read by the overlap test).
fn trace_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nccl-trace-{}.txt", std::process::id()))
}

/// `n` NCCL ranks on cuda:0..n, or None (after saying why) when this machine cannot.
fn group(test: &str, n: usize) -> Option<Vec<Communicator>> {
    static TRACE: Once = Once::new();
    // Set once, before any test reaches the CUDA or NCCL libraries (which read it).
    TRACE.call_once(|| {
        if std::env::var_os("TAPEGRAD_EMU_DEVICES").is_some() {
            std::env::set_var("TAPEGRAD_EMU_NCCL_TRACE", trace_path());
            if std::env::var_os("TAPEGRAD_EMU_NCCL_QUEUE").is_none() {
                std::env::set_var("TAPEGRAD_EMU_NCCL_QUEUE", "1");
            }
        }
    });
    let have = tapegrad_tensor::cuda::device_count();
    let result = if have < n {
        Err(format!("needs {n} CUDA device(s), found {have}"))
    } else {
        Communicator::nccl_group(&(0..n).collect::<Vec<_>>()).map_err(|e| e.to_string())
    };
    match result {
        Ok(c) => Some(c),
        Err(e) if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") => panic!("{test}: REQUIRE_GPU=1 but {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

/// Runs `f(rank, comm)` on one thread per rank (each drives its own GPU).
fn on_ranks<T: Send>(comms: Vec<Communicator>, f: impl Fn(usize, Communicator) -> T + Sync) -> Vec<T> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = comms.into_iter().enumerate().map(|(r, c)| s.spawn(move || f(r, c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn two_gpus_collectives_equal_host_results() {
    let Some(comms) = group("two_gpus_collectives_equal_host_results", 2) else { return };
    let results = on_ranks(comms, |rank, comm| {
        let dev = Device::Cuda(rank);
        assert_eq!((comm.rank(), comm.world_size(), comm.backend()), (rank, 2, "nccl"));
        assert_eq!(comm.reduction_device(), Some(dev));
        let x = Tensor::from_vec((0..6).map(|i| (i * 10 + rank) as f32 * 0.5).collect(), [2, 3], &dev).unwrap();
        let sum = comm.all_reduce(&x, ReduceOp::Sum).unwrap();
        let mean = comm.all_reduce(&x, ReduceOp::Mean).unwrap();
        assert_eq!((sum.device(), sum.dims()), (dev, &[2usize, 3][..]));
        let x64 = Tensor::from_vec(vec![rank as f64 * 0.25, 1.5], [2], &dev).unwrap();
        let mut mean64 = x64.clone();
        comm.all_reduce_in_place(&mut mean64, ReduceOp::Mean).unwrap();
        let b = Tensor::from_vec(vec![rank as f32 + 1.0, -(rank as f32)], [2], &dev).unwrap();
        let from1 = comm.broadcast(&b, 1).unwrap();
        let gathered = comm.all_gather(&b).unwrap();
        assert_eq!((gathered.device(), gathered.dims()), (dev, &[2usize, 2][..]));
        comm.barrier().unwrap();
        // A host tensor is uploaded, reduced on the GPU and comes back to the host.
        let host = Tensor::from_vec(vec![rank as i64 + 1, -7], [2], &Device::Cpu).unwrap();
        let isum = comm.all_reduce(&host, ReduceOp::Sum).unwrap();
        assert_eq!(isum.device(), Device::Cpu);
        (
            sum.to_vec::<f32>().unwrap(),
            mean.to_vec::<f32>().unwrap(),
            mean64.to_vec::<f64>().unwrap(),
            from1.to_vec::<f32>().unwrap(),
            gathered.to_vec::<f32>().unwrap(),
            isum.to_vec::<i64>().unwrap(),
        )
    });
    let expected_sum: Vec<f32> = (0..6).map(|i| (0..2).map(|r| (i * 10 + r) as f32 * 0.5).sum()).collect();
    let expected_mean: Vec<f32> = expected_sum.iter().map(|s| s / 2.0).collect();
    for (sum, mean, mean64, from1, gathered, isum) in &results {
        assert_eq!(sum, &expected_sum);
        assert_eq!(mean, &expected_mean);
        assert_eq!(mean64, &vec![0.125, 1.5]);
        assert_eq!(from1, &vec![2.0, -1.0]);
        assert_eq!(gathered, &vec![1.0, -0.0, 2.0, -1.0]);
        assert_eq!(isum, &vec![3, -14]);
    }
}

/// bf16 and f16 on two GPUs through `ncclBfloat16`/`ncclFloat16` (the fake libnccl sums
/// them in float in rank order and rounds once: the hand-worked results of
/// `common::low_precision`), from tensors on each rank's GPU and from host tensors, which
/// are uploaded and come back. Needs CUDA bf16/f16 tensors (the tensor crate's CUDA backend).
#[test]
fn two_gpus_bf16_and_f16_collectives() {
    let Some(comms) = group("two_gpus_bf16_and_f16_collectives", 2) else { return };
    let errors = on_ranks(comms, |rank, comm| {
        for case in common::low_precision::cases() {
            for dev in [Device::Cuda(rank), Device::Cpu] {
                let x = case.input(rank, &dev);
                let sum = comm.all_reduce(&x, ReduceOp::Sum).unwrap();
                assert_eq!((sum.device(), sum.dims()), (dev, &[4usize][..]));
                case.assert_bits("all_reduce(sum)", &sum, &case.sum);
                case.assert_bits("all_reduce(mean)", &comm.all_reduce(&x, ReduceOp::Mean).unwrap(), &case.mean);
                let mut y = x.clone();
                comm.all_reduce_in_place(&mut y, ReduceOp::Sum).unwrap();
                assert_eq!(y.device(), dev);
                case.assert_bits("all_reduce_in_place(sum)", &y, &case.sum);
                case.assert_bits("broadcast from 1", &comm.broadcast(&x, 1).unwrap(), &case.ranks[1]);
                let gathered = comm.all_gather(&x).unwrap();
                assert_eq!((gathered.device(), gathered.dims()), (dev, &[2usize, 4][..]));
                case.assert_bits("all_gather", &gathered, &[case.ranks[0].clone(), case.ranks[1].clone()].concat());
            }
        }
        // bf16 on one GPU and f16 on the other: the header exchange names both dtypes.
        let dtype = if rank == 0 { DType::BF16 } else { DType::F16 };
        let x = Tensor::ones([4], DType::F32, &Device::Cpu).unwrap().cast(dtype).unwrap();
        comm.all_reduce(&x.to_device(&Device::Cuda(rank)).unwrap(), ReduceOp::Sum).unwrap_err()
    });
    for (rank, err) in errors.iter().enumerate() {
        let msg = err.to_string();
        assert!(matches!(err, Error::Mismatch { .. }), "{msg}");
        for part in [&format!("rank {rank}"), "all_reduce(sum)", "of a bf16 tensor of shape [4]", "of a f16 tensor"] {
            assert!(msg.contains(part), "{part:?} missing in: {msg}");
        }
    }
}

#[test]
fn shape_and_dtype_disagreements_are_errors_on_every_rank() {
    let Some(comms) = group("shape_and_dtype_disagreements_are_errors_on_every_rank", 2) else { return };
    let errors = on_ranks(comms, |rank, comm| {
        let dev = Device::Cuda(rank);
        let x = Tensor::zeros(if rank == 0 { vec![2, 3] } else { vec![3, 2] }, DType::F32, &dev).unwrap();
        let shape = comm.all_reduce(&x, ReduceOp::Sum).unwrap_err();
        let y = Tensor::zeros([4], if rank == 0 { DType::F32 } else { DType::F64 }, &dev).unwrap();
        let dtype = comm.all_reduce(&y, ReduceOp::Mean).unwrap_err();
        // Rank 1 passes a tensor on rank 0's GPU: it refuses, and rank 0 learns it from
        // the header exchange instead of waiting on its GPU for rank 1's data.
        let z = Tensor::zeros([1], DType::F32, &Device::Cuda(0)).unwrap();
        let device = comm.all_reduce(&z, ReduceOp::Sum).unwrap_err();
        // Still usable: agreement works afterwards.
        let ok = comm.all_reduce(&Tensor::ones([1], DType::F32, &dev).unwrap(), ReduceOp::Sum).unwrap();
        assert_eq!(ok.to_vec::<f32>().unwrap(), vec![2.0]);
        (shape, dtype, device)
    });
    for (rank, (shape, dtype, device)) in errors.iter().enumerate() {
        assert!(matches!(shape, Error::Mismatch { .. }), "{shape}");
        let msg = shape.to_string();
        assert!(msg.contains(&format!("rank {rank}")) && msg.contains("[2, 3]") && msg.contains("[3, 2]"), "{msg}");
        assert!(msg.contains("all_reduce(sum)"), "{msg}");
        let msg = dtype.to_string();
        assert!(matches!(dtype, Error::Mismatch { .. }) && msg.contains("f32") && msg.contains("f64"), "{msg}");
        let msg = device.to_string();
        if rank == 1 {
            assert!(matches!(device, Error::Invalid { .. }), "{msg}");
            assert!(msg.contains("rank 1") && msg.contains("on cuda:0") && msg.contains("uses cuda:1"), "{msg}");
        } else {
            assert!(matches!(device, Error::Mismatch { .. }) && msg.contains("refused"), "{msg}");
        }
    }
}

#[test]
fn two_gpus_with_batch_b_equal_one_gpu_with_batch_2b() {
    let Some(comms) = group("two_gpus_with_batch_b_equal_one_gpu_with_batch_2b", 2) else { return };
    let local = DataParallel::new(Arc::new(Communicator::local().unwrap()));
    let single_gpu = common::train_on(&local, 8, 6, &Device::Cuda(0));
    let single_cpu = common::train(&local, 8, 6);
    common::assert_close(&single_gpu, &single_cpu);
    let runs = on_ranks(comms, |rank, comm| {
        // Small buckets: several all-reduces per step, on the GPU.
        let dp = DataParallel::new(Arc::new(comm)).with_bucket_bytes(40).unwrap();
        let run = common::train_on(&dp, 8, 6, &Device::Cuda(rank));
        (run, dp.last_step())
    });
    for (run, report) in &runs {
        common::assert_close(run, &single_gpu);
        assert_eq!(report.bytes, (3 * 8 + 8 + 8 * 2 + 2) * 4);
        assert!(report.buckets >= 2, "{report:?}");
    }
    assert_eq!(runs[0].0 .1, runs[1].0 .1, "the replicas' weights differ");
}

/// The collectives of `counts` elements the fake libnccl has queued on `device` so far
/// (other tests of this process queue collectives of other sizes meanwhile).
fn queued_on(device: usize, counts: &[usize]) -> usize {
    let on_device = format!(" device={device} ");
    std::fs::read_to_string(trace_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&on_device) && counts.iter().any(|c| l.contains(&format!(" count={c} "))))
        .count()
}

#[test]
fn bucket_all_reduces_are_queued_before_the_backward_pass_ends() {
    if std::env::var("TAPEGRAD_EMU_DEVICES").is_err() {
        eprintln!(
            "SKIPPED bucket_all_reduces_are_queued_before_the_backward_pass_ends: needs the fake libnccl's trace"
        );
        return;
    }
    let Some(comms) = group("bucket_all_reduces_are_queued_before_the_backward_pass_ends", 2) else { return };
    let seen = on_ranks(comms, |rank, comm| {
        let dev = Device::Cuda(rank);
        let dp = DataParallel::new(Arc::new(comm)).with_bucket_bytes(16).unwrap();
        // Sizes no other test uses (35, 63 and 9 elements): one bucket each.
        let counts = [35, 63, 9];
        let w1 = Variable::new("w1", Tensor::ones([5, 7], DType::F32, &dev).unwrap(), true);
        let w2 = Variable::new("w2", Tensor::ones([7, 9], DType::F32, &dev).unwrap(), true);
        let w3 = Variable::new("w3", Tensor::ones([9, 1], DType::F32, &dev).unwrap(), true);
        let x = Tensor::ones([2, 5], DType::F32, &dev).unwrap().mul_scalar(0.1).unwrap();
        // The first op's gradient rule runs last in the backward walk: it counts the
        // collectives queued on this GPU by then, and its own gradient is the walk's last.
        let at_end = Arc::new(std::sync::Mutex::new(None));
        let tape = GradientTape::new();
        let loss = tape
            .record(|| {
                let w = w1.value();
                let marked = w.detach();
                let slot = at_end.clone();
                custom_gradient("mark_end_of_backward", &[&w], &marked, move |g| {
                    *slot.lock().unwrap() = Some(queued_on(rank, &counts));
                    Ok(vec![Some(g.clone())])
                });
                x.matmul(&marked)?.tanh()?.matmul(&w2.value())?.tanh()?.matmul(&w3.value())?.sum_all()
            })
            .unwrap();
        let before = queued_on(rank, &counts);
        dp.gradient(&tape, &loss, &[&w1, &w2, &w3]).unwrap();
        let after = queued_on(rank, &counts);
        let at_end = at_end.lock().unwrap().expect("the marker's rule ran");
        (before, at_end, after, dp.last_step())
    });
    for (before, at_end, after, report) in seen {
        // w3's and w2's buckets were queued on the stream while the walk still had w1's
        // gradient (and its kernels) to go; w1's came after.
        assert!(at_end >= before + 2, "queued before the walk ended: {} ({report:?})", at_end - before);
        assert!(after > at_end, "w1's bucket is queued after the walk: {before} {at_end} {after}");
        assert!(report.started_during_backward >= 2, "{report:?}");
    }
}

#[test]
fn single_rank_all_reduce_and_data_parallel_step() {
    let Some(mut comms) = group("single_rank_all_reduce_and_data_parallel_step", 1) else { return };
    let comm = Arc::new(comms.remove(0));
    let dev = Device::Cuda(0);
    let x = Tensor::from_vec(vec![1.5f32, -2.0, 3.25], [3], &dev).unwrap();
    assert_eq!(comm.all_reduce(&x, ReduceOp::Sum).unwrap().to_vec::<f32>().unwrap(), vec![1.5, -2.0, 3.25]);
    assert_eq!(comm.all_reduce(&x, ReduceOp::Mean).unwrap().to_vec::<f32>().unwrap(), vec![1.5, -2.0, 3.25]);
    let nccl = common::train_on(&DataParallel::new(comm).with_bucket_bytes(40).unwrap(), 8, 3, &dev);
    let local = common::train_on(&DataParallel::new(Arc::new(Communicator::local().unwrap())), 8, 3, &dev);
    common::assert_close(&nccl, &local);
}

#[test]
fn bad_groups_are_refused_naming_the_problem() {
    let e = Communicator::nccl_group(&[]).unwrap_err().to_string();
    assert!(e.contains("no devices"), "{e}");
    let e = Communicator::nccl_group(&[0, 0]).unwrap_err().to_string();
    assert!(e.contains("cuda:0 is listed twice"), "{e}");
}
