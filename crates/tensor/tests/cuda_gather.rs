//! gather and scatter_add on CUDA against the CPU backend: forward values, gradients
//! through GradientTape, bitwise run-to-run determinism of the scatter-add, and an index
//! outside the table reported as an error on the device too.
//!
//! Without a usable GPU every test prints `SKIPPED <test>: <reason>` on stderr and passes;
//! `REQUIRE_GPU=1` turns that into a failure (scripts/cuda-emu/run.sh sets it).
#![cfg(feature = "cuda")]

use tapegrad_tensor::testing::cuda_or_skip;
use tapegrad_tensor::{DType, Device, GradientTape, Result, Tensor};

/// A table `[rows, 3, 5]` and `[4, 6]` indices into it that repeat (rows < 24).
fn case(dtype: DType, rows: usize) -> Result<(Tensor, Tensor)> {
    let n = rows * 15;
    let table: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.61).sin() * 3.0).collect();
    let table = Tensor::from_vec(table, [rows, 3, 5], &Device::Cpu)?.cast(dtype)?;
    let ids: Vec<i64> = (0..24).map(|i| (i * 7 % rows) as i64).collect();
    Ok((table, Tensor::from_vec(ids, [4, 6], &Device::Cpu)?))
}

/// `gather(table, ids)` and the gradient of `sum(gather * weights)` with respect to the table.
fn gather_and_grad(table: &Tensor, ids: &Tensor) -> Result<(Tensor, Tensor)> {
    let weights: Vec<f64> = (0..ids.elem_count() * 15).map(|i| 1.0 + (i % 7) as f64 * 0.25).collect();
    let weights =
        Tensor::from_vec(weights, [4, 6, 3, 5], &Device::Cpu)?.cast(table.dtype())?.to_device(&table.device())?;
    let tape = GradientTape::new();
    tape.watch(table);
    let (y, loss) = tape.record(|| {
        let y = table.gather(ids)?;
        let loss = y.mul(&weights)?.sum_all()?;
        Ok((y, loss))
    })?;
    let g = tape.gradient(&loss, &[table])?.remove(0).expect("the table takes part");
    Ok((y, g))
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (a, b) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: cuda {x} vs cpu {y}");
    }
}

#[test]
fn gather_and_its_gradient_match_the_cpu() {
    let Some((_lock, gpu)) = cuda_or_skip("gather_and_its_gradient_match_the_cpu") else { return };
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::F64, 1e-12)] {
        let (table, ids) = case(dtype, 5).unwrap();
        let (y_cpu, g_cpu) = gather_and_grad(&table, &ids).unwrap();
        let table_gpu = table.to_device(&gpu).unwrap();
        // Indices on either device work; the op reads them on the host once.
        for ids_dev in [ids.clone(), ids.to_device(&gpu).unwrap()] {
            let (y, g) = gather_and_grad(&table_gpu, &ids_dev).unwrap();
            assert_eq!(y.device(), gpu);
            assert_close(&format!("gather {dtype}"), &y, &y_cpu, tol);
            assert_close(&format!("gather gradient {dtype}"), &g, &g_cpu, tol);
        }
    }
}

#[test]
fn scatter_add_matches_the_cpu_bit_for_bit_at_every_run() {
    let Some((_lock, gpu)) = cuda_or_skip("scatter_add_matches_the_cpu_bit_for_bit_at_every_run") else { return };
    // Values of mixed magnitude, so a different summation order would change the bits.
    let n = 3000;
    let values: Vec<f32> = (0..n * 8).map(|i| ((i as f32) * 0.37).sin() * 10f32.powi((i % 7) as i32 - 3)).collect();
    let ids: Vec<i64> = (0..n).map(|i| (i * 7919 % 11) as i64).collect();
    let values = Tensor::from_vec(values, [n, 8], &Device::Cpu).unwrap();
    let ids = Tensor::from_vec(ids, [n], &Device::Cpu).unwrap();
    let cpu = Tensor::scatter_add(&values, &ids, 12).unwrap().to_vec::<f32>().unwrap();
    let values_gpu = values.to_device(&gpu).unwrap();
    for run in 0..3 {
        let got = Tensor::scatter_add(&values_gpu, &ids, 12).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(got, cpu, "run {run}: the same order of additions as the CPU");
    }
    assert!(cpu[11 * 8..].iter().all(|&v| v == 0.0), "row 11 is never indexed");
}

#[test]
fn an_index_outside_the_table_is_an_error_on_the_gpu() {
    let Some((_lock, gpu)) = cuda_or_skip("an_index_outside_the_table_is_an_error_on_the_gpu") else { return };
    let (table, _) = case(DType::F32, 4).unwrap();
    let table = table.to_device(&gpu).unwrap();
    let bad = Tensor::from_vec(vec![0i64, 3, 4], [3], &gpu).unwrap();
    let err = table.gather(&bad).unwrap_err().to_string();
    assert!(err.contains("gather") && err.contains("index 4") && err.contains("position 2"), "{err}");
    let values = Tensor::ones([3, 2], DType::F32, &gpu).unwrap();
    let err = Tensor::scatter_add(&values, &bad, 4).unwrap_err().to_string();
    assert!(err.contains("scatter_add") && err.contains("index 4"), "{err}");
}
