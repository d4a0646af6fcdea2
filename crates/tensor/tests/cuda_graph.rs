//! CUDA-graph capture and replay (`tapegrad_tensor::cuda_graph`), and the emulated driver's
//! rules for stream capture:
//! - the driver rejects, during a capture, what a real one rejects (allocation, free,
//!   stream/context/event synchronisation, a copy from pageable host memory, work on the
//!   legacy default stream), and the capture is then invalidated;
//! - captured work runs at replay, not at capture, with the arguments it was captured with;
//! - tapegrad's own checks name what needs the host (a read-back, an upload, waiting, an
//!   allocation the cache cannot serve), and leave the device usable;
//! - a replay computes what the eager ops compute, from the static inputs' current values,
//!   and never writes memory handed to a later tensor.
//!
//! Without a usable GPU every test prints `SKIPPED <test>: <reason>` on stderr and passes;
//! `REQUIRE_GPU=1` turns that into a failure (scripts/cuda-emu/run.sh sets it).
#![cfg(feature = "cuda")]

use cudarc::driver::{sys, CudaContext};
use std::ptr::null_mut;
use tapegrad_tensor::cuda_graph::{copy_into, is_capturing, CudaGraph};
use tapegrad_tensor::{cuda, DType, Device, Error, Result, Tensor};

use sys::cudaError_enum::{
    CUDA_ERROR_STREAM_CAPTURE_IMPLICIT as IMPLICIT, CUDA_ERROR_STREAM_CAPTURE_INVALIDATED as INVALIDATED,
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED as UNSUPPORTED, CUDA_SUCCESS as SUCCESS,
};
use tapegrad_tensor::testing::cuda_or_skip;

/// A raw stream of the driver (context current on this thread).
fn raw_stream() -> (std::sync::Arc<CudaContext>, sys::CUstream) {
    let ctx = CudaContext::new(0).expect("context");
    ctx.bind_to_thread().expect("bind");
    let mut stream = null_mut();
    // SAFETY: plain stream creation with the context current.
    assert_eq!(unsafe { sys::cuStreamCreate(&mut stream, 0) }, SUCCESS);
    (ctx, stream)
}

fn device_alloc(bytes: usize) -> sys::CUdeviceptr {
    let mut p = 0;
    // SAFETY: allocation with the context current (outside any capture).
    assert_eq!(unsafe { sys::cuMemAlloc_v2(&mut p, bytes) }, SUCCESS);
    p
}

fn begin(stream: sys::CUstream) {
    // SAFETY: the stream is live and not capturing.
    let r = unsafe { sys::cuStreamBeginCapture_v2(stream, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL) };
    assert_eq!(r, SUCCESS);
}

/// Ends the capture; the graph, or the error.
fn end(stream: sys::CUstream) -> std::result::Result<sys::CUgraph, sys::CUresult> {
    let mut graph = null_mut();
    // SAFETY: the stream is capturing.
    match unsafe { sys::cuStreamEndCapture(stream, &mut graph) } {
        SUCCESS => Ok(graph),
        e => {
            assert!(graph.is_null(), "a failed capture returned a graph");
            Err(e)
        }
    }
}

/// Runs `call` during a capture: it must fail with `expected`, and the capture must end
/// invalidated, without a graph.
fn rejected(what: &str, stream: sys::CUstream, expected: sys::CUresult, call: impl FnOnce() -> sys::CUresult) {
    begin(stream);
    assert_eq!(call(), expected, "{what} during a capture");
    assert_eq!(end(stream).err(), Some(INVALIDATED), "{what}: the capture must be invalidated");
}

#[test]
fn the_driver_rejects_what_a_capture_forbids() {
    let Some(_gpu) = cuda_or_skip("the_driver_rejects_what_a_capture_forbids") else { return };
    let (_ctx, stream) = raw_stream();
    let buffer = device_alloc(4096);
    let mut event = null_mut();
    // SAFETY: raw driver calls on live handles; the pointers are valid for the sizes given.
    unsafe {
        assert_eq!(sys::cuEventCreate(&mut event, 0), SUCCESS);
        rejected("cuMemAlloc", stream, UNSUPPORTED, || {
            let mut p = 0;
            sys::cuMemAlloc_v2(&mut p, 512)
        });
        rejected("cuMemFree", stream, UNSUPPORTED, || sys::cuMemFree_v2(buffer));
        rejected("cuStreamSynchronize", stream, UNSUPPORTED, || sys::cuStreamSynchronize(stream));
        rejected("cuCtxSynchronize", stream, UNSUPPORTED, || sys::cuCtxSynchronize());
        rejected("cuEventSynchronize", stream, UNSUPPORTED, || sys::cuEventSynchronize(event));
        let pageable = vec![1u8; 4096];
        rejected("a host-to-device copy from pageable memory", stream, UNSUPPORTED, || {
            sys::cuMemcpyHtoDAsync_v2(buffer, pageable.as_ptr().cast(), 4096, stream)
        });
        let mut back = vec![0u8; 4096];
        rejected("a device-to-host copy into pageable memory", stream, UNSUPPORTED, || {
            sys::cuMemcpyDtoHAsync_v2(back.as_mut_ptr().cast(), buffer, 4096, stream)
        });
        let mut module = null_mut();
        let mut function = null_mut();
        assert_eq!(sys::cuModuleLoadData(&mut module, c"emulated".as_ptr().cast()), SUCCESS);
        assert_eq!(sys::cuModuleGetFunction(&mut function, module, c"strided_copy_u32_b32".as_ptr()), SUCCESS);
        rejected("a launch on the legacy default stream", stream, IMPLICIT, || {
            sys::cuLaunchKernel(function, 1, 1, 1, 32, 1, 1, 0, null_mut(), null_mut(), null_mut())
        });
        rejected("a memset on the legacy default stream", stream, IMPLICIT, || {
            sys::cuMemsetD8Async(buffer, 0, 16, null_mut())
        });
        // The same calls are fine outside a capture.
        assert_eq!(sys::cuStreamSynchronize(stream), SUCCESS);
        assert_eq!(sys::cuMemcpyHtoDAsync_v2(buffer, pageable.as_ptr().cast(), 4096, stream), SUCCESS);
        assert_eq!(sys::cuMemFree_v2(buffer), SUCCESS);
        assert_eq!(sys::cuEventDestroy_v2(event), SUCCESS);
    }
}

#[test]
fn captured_work_runs_at_each_replay_not_at_capture() {
    let Some(_gpu) = cuda_or_skip("captured_work_runs_at_each_replay_not_at_capture") else { return };
    let (_ctx, stream) = raw_stream();
    let (a, b) = (device_alloc(64), device_alloc(64));
    // SAFETY: raw driver calls on live buffers of 64 bytes and a 64-byte pinned buffer.
    unsafe {
        let mut pinned = null_mut();
        assert_eq!(sys::cuMemHostAlloc(&mut pinned, 64, 0), SUCCESS);
        let pinned = pinned.cast::<u8>();
        std::ptr::write_bytes(pinned, 1, 64);
        let mut host = [0u8; 64];
        assert_eq!(sys::cuMemsetD8Async(b, 9, 64, stream), SUCCESS);
        begin(stream);
        // Pinned memory is read when the graph runs; then a device copy and a memset.
        assert_eq!(sys::cuMemcpyHtoDAsync_v2(a, pinned.cast(), 64, stream), SUCCESS);
        assert_eq!(sys::cuMemcpyDtoDAsync_v2(b, a, 32, stream), SUCCESS);
        assert_eq!(sys::cuMemsetD8Async(a, 5, 16, stream), SUCCESS);
        let graph = end(stream).expect("a capture of copies and memsets");
        assert_eq!(sys::cuMemcpyDtoHAsync_v2(host.as_mut_ptr().cast(), b, 64, stream), SUCCESS);
        assert_eq!(host, [9u8; 64], "nothing ran at capture");
        let mut exec = null_mut();
        assert_eq!(sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0), SUCCESS);
        for round in 2u8..4 {
            std::ptr::write_bytes(pinned, round, 64);
            assert_eq!(sys::cuGraphLaunch(exec, stream), SUCCESS);
            assert_eq!(sys::cuStreamSynchronize(stream), SUCCESS);
            assert_eq!(sys::cuMemcpyDtoHAsync_v2(host.as_mut_ptr().cast(), b, 64, stream), SUCCESS);
            let expected: Vec<u8> = (0..64).map(|i| if i < 32 { round } else { 9 }).collect();
            assert_eq!(host.to_vec(), expected, "replay {round}: b holds the pinned bytes of this round");
            assert_eq!(sys::cuMemcpyDtoHAsync_v2(host.as_mut_ptr().cast(), a, 64, stream), SUCCESS);
            let expected: Vec<u8> = (0..64).map(|i| if i < 16 { 5 } else { round }).collect();
            assert_eq!(host.to_vec(), expected, "replay {round}: a, copied then partly set");
        }
        assert_eq!(sys::cuGraphExecDestroy(exec), SUCCESS);
        assert_eq!(sys::cuGraphDestroy(graph), SUCCESS);
        assert_eq!(sys::cuMemFreeHost(pinned.cast()), SUCCESS);
        assert_eq!(sys::cuMemFree_v2(a), SUCCESS);
        assert_eq!(sys::cuMemFree_v2(b), SUCCESS);
    }
}

fn ramp(n: usize, scale: f32, device: &Device) -> Tensor {
    let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * scale).collect();
    Tensor::from_vec(values, [n], device).unwrap()
}

/// The computation the graph tests capture: kernels, a reduction and a broadcast.
fn work(x: &Tensor, w: &Tensor) -> Result<(Tensor, Tensor)> {
    let y = x.mul(w)?.exp()?.add_scalar(0.5)?;
    let total = y.sum_all()?;
    Ok((y.div(&total)?, total))
}

#[test]
fn a_replay_computes_the_eager_result_from_the_current_inputs() {
    let Some((_gpu, gpu)) = cuda_or_skip("a_replay_computes_the_eager_result_from_the_current_inputs") else {
        return;
    };
    let n = 5000;
    let x = ramp(n, 1.0, &gpu);
    let w = ramp(n, 0.5, &gpu);
    work(&x, &w).unwrap(); // warm: kernels loaded, blocks cached
    let (graph, (y, total)) = CudaGraph::capture(&gpu, || work(&x, &w)).unwrap();
    assert!(!is_capturing(&gpu));
    assert_eq!(graph.device(), gpu);
    for scale in [1.0f32, -2.0, 0.25] {
        let batch = ramp(n, scale, &Device::Cpu);
        copy_into(&x, &batch).unwrap();
        graph.replay().unwrap();
        let (eager_y, eager_total) = work(&batch.to_device(&gpu).unwrap(), &w).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), eager_y.to_vec::<f32>().unwrap(), "scale {scale}");
        assert_eq!(total.to_vec::<f32>().unwrap(), eager_total.to_vec::<f32>().unwrap(), "scale {scale}");
    }
}

#[test]
fn memory_a_graph_writes_is_not_handed_out_while_it_lives() {
    let Some((_gpu, gpu)) = cuda_or_skip("memory_a_graph_writes_is_not_handed_out_while_it_lives") else { return };
    let n = 3000;
    let x = ramp(n, 1.0, &gpu);
    x.mul_scalar(3.0).unwrap();
    let (graph, out) = CudaGraph::capture(&gpu, || x.mul_scalar(3.0)).unwrap();
    // The graph's output buffer goes back to the graph's pool, not to the shared cache:
    // the next tensor of that size must get other memory, or the replay would overwrite it.
    drop(out);
    let other = ramp(n, 2.0, &Device::Cpu);
    let kept = other.to_device(&gpu).unwrap();
    graph.replay().unwrap();
    assert_eq!(kept.to_vec::<f32>().unwrap(), other.to_vec::<f32>().unwrap());
    // Dropped, the graph returns its memory: a steady loop needs no new driver allocation.
    drop(graph);
    let before = cuda::memory_stats(0).unwrap().device_allocations;
    x.mul_scalar(3.0).unwrap();
    assert_eq!(cuda::memory_stats(0).unwrap().device_allocations, before);
}

#[test]
fn a_geometry_first_seen_in_benchmark_mode_during_a_capture_is_not_measured() {
    let Some((_gpu, gpu)) = cuda_or_skip("a_geometry_first_seen_in_benchmark_mode_during_a_capture_is_not_measured")
    else {
        return;
    };
    // Measuring (cudnnFind*) runs the convolutions and waits for them, which a capture
    // forbids (the emulator refuses it): in a capture the heuristics' plan is used.
    let x = Tensor::from_vec(ramp(2 * 7 * 6 * 3, 1.0, &Device::Cpu).to_vec::<f32>().unwrap(), [2, 7, 6, 3], &gpu);
    let k = Tensor::from_vec(ramp(4 * 3 * 3 * 3, 0.5, &Device::Cpu).to_vec::<f32>().unwrap(), [4, 3, 3, 3], &gpu);
    let (x, k) = (x.unwrap(), k.unwrap());
    let params = tapegrad_tensor::Conv2dParams { padding: tapegrad_tensor::Padding::Same, ..Default::default() };
    let conv = || x.conv2d(&k, None, &params);
    let eager = conv().unwrap(); // the heuristics' plan made, kernels loaded
    drop(conv().unwrap()); // the capture's blocks cached
    cuda::set_cudnn_benchmark(true);
    let captured = CudaGraph::capture(&gpu, conv);
    cuda::set_cudnn_benchmark(false);
    let (graph, y) = captured.unwrap();
    graph.replay().unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), eager.to_vec::<f32>().unwrap());
}

/// A capture of `f` must fail with an error whose message contains `needle`; afterwards the
/// device works eagerly and captures again.
fn capture_fails(gpu: &Device, needle: &str, f: impl FnOnce() -> Result<Tensor>) {
    let err = CudaGraph::capture(gpu, f).expect_err(needle).to_string();
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!is_capturing(gpu), "{needle}: the device is still capturing");
    let x = ramp(700, 1.0, gpu);
    assert_eq!(x.exp().unwrap().to_vec::<f32>().unwrap().len(), 700);
    let (graph, y) = CudaGraph::capture(gpu, || x.exp()).unwrap();
    graph.replay().unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), x.exp().unwrap().to_vec::<f32>().unwrap());
}

#[test]
fn what_needs_the_host_fails_the_capture_with_its_name() {
    let Some((_gpu, gpu)) = cuda_or_skip("what_needs_the_host_fails_the_capture_with_its_name") else { return };
    let x = ramp(700, 1.0, &gpu);
    x.exp().unwrap();
    capture_fails(&gpu, "back to the host", || {
        let y = x.exp()?;
        y.to_vec::<f32>()?;
        Ok(y)
    });
    capture_fails(&gpu, "from host memory", || Tensor::from_vec(vec![1.0f32; 700], [700], &gpu));
    capture_fails(&gpu, "waiting for the device", || {
        cuda::synchronize(0)?;
        x.exp()
    });
    capture_fails(&gpu, "no cached block", || Tensor::zeros([3_333_333], DType::F32, &gpu));
    // gather reads its indices on the host.
    let ids = Tensor::from_vec(vec![0i64, 3, 2], [3], &gpu).unwrap();
    let table = Tensor::zeros([5, 4], DType::F32, &gpu).unwrap();
    table.gather(&ids).unwrap();
    capture_fails(&gpu, "back to the host", || table.gather(&ids));
    capture_fails(&gpu, "do not nest", || {
        let (_inner, y) = CudaGraph::capture(&gpu, || x.exp())?;
        Ok(y)
    });
    // The closure's own error comes out as it went in.
    let err = CudaGraph::capture(&gpu, || -> Result<Tensor> { Err(Error::invalid("mine", "on purpose")) });
    assert!(err.unwrap_err().to_string().contains("on purpose"));
}

#[test]
fn bad_arguments_are_errors() {
    let Some((_gpu, gpu)) = cuda_or_skip("bad_arguments_are_errors") else { return };
    let err = CudaGraph::capture(&Device::Cpu, || Ok(())).unwrap_err().to_string();
    assert!(err.contains("need a CUDA device, got cpu"), "{err}");
    let a = Tensor::zeros([4, 3], DType::F32, &gpu).unwrap();
    let cases = [
        (Tensor::zeros([3, 4], DType::F32, &gpu).unwrap(), "[4, 3]"),
        (Tensor::zeros([4, 3], DType::F64, &gpu).unwrap(), "f64"),
    ];
    for (src, needle) in cases {
        let err = copy_into(&a, &src).unwrap_err().to_string();
        assert!(err.contains("copy_into") && err.contains(needle), "{err}");
    }
    let host = Tensor::zeros([4, 3], DType::F32, &Device::Cpu).unwrap();
    let err = copy_into(&host, &a).unwrap_err().to_string();
    assert!(err.contains("must be a CUDA tensor"), "{err}");
    copy_into(&a, &Tensor::ones([4, 3], DType::F32, &Device::Cpu).unwrap()).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), vec![1.0; 12]);
}

/// A parameter-like tensor of `n` elements on `device` (a different ramp per `seed`).
fn param(n: usize, seed: f32, device: &Device) -> Tensor {
    let values: Vec<f32> = (0..n).map(|i| ((i as f32 + seed) * 0.71).cos() * 0.3).collect();
    Tensor::from_vec(values, [n], device).unwrap()
}

/// Private copies of `ts` on their device (the in-place updates overwrite what they get).
fn copies(ts: &[Tensor]) -> Vec<Tensor> {
    ts.iter()
        .map(|t| {
            let c = t.zeros_like().unwrap();
            copy_into(&c, t).unwrap();
            c
        })
        .collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

#[test]
fn captured_optimizer_updates_read_each_steps_values_from_the_device() {
    use tapegrad_tensor::optim::{
        adam_update_many, adam_update_many_in_place, sgd_update_many, sgd_update_many_in_place, AdamOperands, AdamStep,
        SgdOperands, SgdStep, StepScalars,
    };
    let Some((_gpu, gpu)) = cuda_or_skip("captured_optimizer_updates_read_each_steps_values_from_the_device") else {
        return;
    };
    // Sizes across a chunk boundary and an empty tensor; more than one table (40) of them.
    let sizes: Vec<usize> = (0..43).map(|k| [5, 4097, 0, 130][k % 4]).collect();
    let grads: Vec<Tensor> = sizes.iter().enumerate().map(|(k, &n)| param(n, k as f32 + 0.5, &gpu)).collect();
    let start: Vec<Tensor> = sizes.iter().enumerate().map(|(k, &n)| param(n, k as f32, &gpu)).collect();
    let lr = |t: u64| 0.02 / (1.0 + t as f64); // a different learning rate every step
    let adam = |t: u64| AdamStep {
        learning_rate: lr(t),
        step: t,
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-7,
        weight_decay: 0.01,
    };
    let sgd = |t: u64| SgdStep { learning_rate: lr(t), momentum: 0.9, nesterov: true, weight_decay: 1e-3 };

    // One eager Adam step on (w, m, v); m and v empty on the first.
    let eager = |w: &[Tensor], m: &[Tensor], v: &[Tensor], t: u64| {
        let items: Vec<AdamOperands<'_>> = (0..sizes.len())
            .map(|k| AdamOperands { param: &w[k], grad: &grads[k], m: m.get(k), v: v.get(k) })
            .collect();
        let out = adam_update_many(&items, &adam(t)).unwrap();
        let w: Vec<Tensor> = out.iter().map(|o| o.0.clone()).collect();
        let m: Vec<Tensor> = out.iter().map(|o| o.1.clone()).collect();
        let v: Vec<Tensor> = out.iter().map(|o| o.2.clone()).collect();
        (w, m, v)
    };
    // Step 1 makes the state; the graph's buffers start from its results.
    let mut reference = eager(&start, &[], &[], 1);
    let (gw, gm, gv) = (copies(&reference.0), copies(&reference.1), copies(&reference.2));
    let scalars = StepScalars::new(&gpu, DType::F32).unwrap();
    let items: Vec<AdamOperands<'_>> = (0..sizes.len())
        .map(|k| AdamOperands { param: &gw[k], grad: &grads[k], m: Some(&gm[k]), v: Some(&gv[k]) })
        .collect();
    let (graph, ()) = CudaGraph::capture(&gpu, || adam_update_many_in_place(&items, &adam(2), &scalars)).unwrap();
    // Each replay, with its step's values written first, equals the eager step.
    for t in 2..=5 {
        scalars.write_adam(&adam(t)).unwrap();
        graph.replay().unwrap();
        reference = eager(&reference.0, &reference.1, &reference.2, t);
        for k in 0..sizes.len() {
            assert_eq!(bits(&gw[k]), bits(&reference.0[k]), "adam step {t}, parameter {k}");
            assert_eq!(bits(&gm[k]), bits(&reference.1[k]), "adam step {t}, m {k}");
            assert_eq!(bits(&gv[k]), bits(&reference.2[k]), "adam step {t}, v {k}");
        }
    }
    drop(graph);

    // SGD with momentum. Nesterov is a launch flag, fixed at capture: every step uses it.
    let first = sgd(1);
    let items: Vec<SgdOperands<'_>> =
        (0..sizes.len()).map(|k| SgdOperands { param: &start[k], grad: &grads[k], velocity: None }).collect();
    let out = sgd_update_many(&items, &first).unwrap();
    let w: Vec<Tensor> = out.iter().map(|(a, _)| a.clone()).collect();
    let vel: Vec<Tensor> = out.iter().map(|(_, b)| b.clone().unwrap()).collect();
    let (gw, gvel) = (copies(&w), copies(&vel));
    let scalars = StepScalars::new(&gpu, DType::F32).unwrap();
    let items: Vec<SgdOperands<'_>> =
        (0..sizes.len()).map(|k| SgdOperands { param: &gw[k], grad: &grads[k], velocity: Some(&gvel[k]) }).collect();
    let (graph, ()) = CudaGraph::capture(&gpu, || sgd_update_many_in_place(&items, &sgd(2), &scalars)).unwrap();
    let mut reference = (w, vel);
    for t in 2..=5 {
        let step = sgd(t);
        scalars.write_sgd(&step).unwrap();
        graph.replay().unwrap();
        let items: Vec<SgdOperands<'_>> = (0..sizes.len())
            .map(|k| SgdOperands { param: &reference.0[k], grad: &grads[k], velocity: Some(&reference.1[k]) })
            .collect();
        let out = sgd_update_many(&items, &step).unwrap();
        reference =
            (out.iter().map(|(a, _)| a.clone()).collect(), out.iter().map(|(_, b)| b.clone().unwrap()).collect());
        for k in 0..sizes.len() {
            assert_eq!(bits(&gw[k]), bits(&reference.0[k]), "sgd step {t}, parameter {k}");
            assert_eq!(bits(&gvel[k]), bits(&reference.1[k]), "sgd step {t}, velocity {k}");
        }
    }
}

#[test]
fn bad_in_place_updates_are_errors() {
    use tapegrad_tensor::optim::{adam_update_many_in_place, AdamOperands, AdamStep, StepScalars};
    let Some((_gpu, gpu)) = cuda_or_skip("bad_in_place_updates_are_errors") else { return };
    let err = StepScalars::new(&Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("need a CUDA device, got cpu"), "{err}");
    let err = StepScalars::new(&gpu, DType::I64).unwrap_err().to_string();
    assert!(err.contains("i64"), "{err}");
    let scalars = StepScalars::new(&gpu, DType::F32).unwrap();
    let step = AdamStep { learning_rate: 0.1, step: 1, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, weight_decay: 0.0 };
    let w = param(10, 0.0, &gpu);
    let missing = [AdamOperands { param: &w, grad: &w, m: None, v: None }];
    let err = adam_update_many_in_place(&missing, &step, &scalars).unwrap_err().to_string();
    assert!(err.contains("first state of parameter #0 is missing"), "{err}");
    let w64 = w.cast(DType::F64).unwrap();
    let wrong = [AdamOperands { param: &w64, grad: &w64, m: Some(&w64), v: Some(&w64) }];
    let err = adam_update_many_in_place(&wrong, &step, &scalars).unwrap_err().to_string();
    assert!(err.contains("parameter #0 is f64") && err.contains("step values are f32"), "{err}");
    let err = scalars.write_adam(&AdamStep { learning_rate: f64::NAN, ..step }).unwrap_err().to_string();
    assert!(err.contains("learning_rate"), "{err}");
    let err = CudaGraph::capture(&gpu, || scalars.write_adam(&step)).unwrap_err().to_string();
    assert!(err.contains("writing a step's values"), "{err}");
}
