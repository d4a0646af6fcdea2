//! Criterion benchmark of one optimizer step (`apply_gradients`) over the variables of the
//! seed ResNet18 (11.2M trainable parameters in 78 tensors): Adam (the seed's optimizer) and
//! SGD with momentum. `benches/optimizer_step_torch.py` times PyTorch's optimizers on the
//! same shapes with the same number of threads.
//!
//! Run: `cargo bench --bench optimizer_step` (threads: `RAYON_NUM_THREADS`).

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{rngs::StdRng, SeedableRng};
use std::time::Duration;
use tapegrad::layers::models::resnet18;
use tapegrad::layers::optimizers::{Adam, Optimizer, Sgd};
use tapegrad::layers::{InputSpec, Layer};
use tapegrad::{DType, Device, Tensor, Variable};

fn setup() -> (Vec<Variable>, Vec<Option<Tensor>>) {
    let model = resnet18(100);
    model.build(&InputSpec::new([1, 32, 32, 3])).expect("build");
    let vars = model.trainable_variables();
    let mut rng = StdRng::seed_from_u64(0);
    let grads = vars
        .iter()
        .map(|v| {
            let shape = v.value_untracked().shape().clone();
            Some(Tensor::rand_uniform(shape, -1e-3, 1e-3, DType::F32, &Device::Cpu, &mut rng).expect("grad"))
        })
        .collect();
    (vars, grads)
}

fn optimizer_step(c: &mut Criterion) {
    let (vars, grads) = setup();
    let mut group = c.benchmark_group("optimizer_step_resnet18");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let mut adam = Adam::new(3e-4);
    group.bench_function("adam", |b| b.iter(|| adam.apply_gradients(&grads, &vars).expect("adam")));
    let mut sgd = Sgd::new(0.1).momentum(0.9);
    group.bench_function("sgd_momentum", |b| b.iter(|| sgd.apply_gradients(&grads, &vars).expect("sgd")));
    group.finish();
}

criterion_group!(benches, optimizer_step);
criterion_main!(benches);
