//! The 32- and 64-bit index forms of the index-heavy CUDA kernels (strided copy, concat,
//! broadcast binary ops, max and average pooling forward and backward, batch norm's
//! elementwise passes) give the same bits, and the CPU's values. The 64-bit forms serve
//! tensors of 2^31 elements and more, too large for a test: `cuda::set_index32_limit(0)`
//! sends every launch down them instead, and a limit between the sizes of one workload
//! mixes the two forms within it.
//!
//! One test in this binary: the limit is process-wide. Without a usable GPU it prints
//! `SKIPPED <test>: <reason>` and passes; `REQUIRE_GPU=1` turns that into a failure.
#![cfg(feature = "cuda")]

use tapegrad_tensor::{cuda, Device, GradientTape, Padding, Result, Tensor};

/// Values that differ at every element (so a wrong index shows).
fn ramp(dims: &[usize], seed: f32) -> Tensor {
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n).map(|i| ((i as f32 + seed) * 0.377).sin() * 2.0).collect();
    Tensor::from_vec(values, dims.to_vec(), &Device::Cpu).unwrap()
}

/// Every output of the workload on `device`, as f32 bits.
fn workload(device: &Device) -> Result<Vec<(&'static str, Vec<u32>)>> {
    let on = |t: Tensor| t.to_device(device);
    let x = on(ramp(&[2, 7, 5, 6], 0.0))?;
    let row = on(ramp(&[1, 1, 5, 1], 3.0))?;
    let mut out: Vec<(&'static str, Tensor)> = vec![
        // Strided copies: a permutation and a narrowed view (each copies into a new buffer).
        ("permute", x.permute(&[3, 1, 0, 2])?),
        ("narrow", x.narrow(2, 1, 3)?),
        ("concat", Tensor::concat(&[&x, &x.mul_scalar(2.0)?, &x.narrow(3, 0, 2)?], 3)?),
        ("broadcast add", x.add(&row)?),
        ("broadcast div", row.div(&x.add_scalar(5.0)?)?),
    ];
    // Pooling and batch norm, forward and backward.
    let tape = GradientTape::new();
    tape.watch(&x);
    let (loss, max, avg, normed) = tape.record(|| {
        let max = x.max_pool2d((3, 2), (2, 1), Padding::Same)?;
        let avg = x.avg_pool2d((2, 2), (2, 2), Padding::Same)?;
        let (bn, _, _) = x.batch_norm_train(None, None, 1e-3)?;
        let pooled = max.sum_all()?.add(&avg.mul_scalar(0.5)?.sum_all()?)?;
        Ok((pooled.add(&bn.mul(&x)?.sum_all()?)?, max, avg, bn))
    })?;
    let grads = tape.gradient(&loss, &[&x])?;
    out.push(("max pool", max));
    out.push(("average pool", avg));
    out.push(("batch norm", normed));
    out.push(("pool + batch norm gradient", grads.into_iter().next().flatten().expect("a gradient")));
    out.into_iter().map(|(name, t)| Ok((name, t.to_vec::<f32>()?.into_iter().map(f32::to_bits).collect()))).collect()
}

#[test]
fn both_index_widths_give_the_same_bits() {
    let gpu = Device::Cuda(0);
    if let Err(e) = cuda::ensure_available(0) {
        assert!(std::env::var("REQUIRE_GPU").as_deref() != Ok("1"), "REQUIRE_GPU=1 but {e}");
        eprintln!("SKIPPED both_index_widths_give_the_same_bits: {e}");
        return;
    }
    assert_eq!(cuda::index32_limit(), cuda::DEFAULT_INDEX32_LIMIT);
    let narrow = workload(&gpu).unwrap();
    // Against the CPU: exact for the layout ops, close for the arithmetic.
    let cpu = workload(&Device::Cpu).unwrap();
    for ((name, g), (_, c)) in narrow.iter().zip(&cpu) {
        assert_eq!(g.len(), c.len(), "{name}");
        for (a, b) in g.iter().zip(c) {
            let (a, b) = (f32::from_bits(*a), f32::from_bits(*b));
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{name}: cuda {a} vs cpu {b}");
        }
    }
    // 0: every launch indexes in 64 bits. 421: those over the 420 elements of x in 32 bits,
    // the concatenation (980 elements) in 64.
    for limit in [0, 421] {
        cuda::set_index32_limit(limit);
        let wide = workload(&gpu);
        cuda::set_index32_limit(cuda::DEFAULT_INDEX32_LIMIT);
        for ((name, a), (_, b)) in narrow.iter().zip(&wide.unwrap()) {
            assert!(a == b, "{name}: the 64-bit form (limit {limit}) differs from the 32-bit one");
        }
    }
    cuda::set_index32_limit(usize::MAX);
    assert_eq!(cuda::index32_limit(), cuda::DEFAULT_INDEX32_LIMIT, "capped at 2^31");
}
