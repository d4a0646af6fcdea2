//! Bounded mutation fuzzing of the checkpoint loader (seconds): random bit flips,
//! byte writes, truncations, insertions, deletions and copied runs of a checkpoint the
//! test writes. No mutant may panic, and a mutant that loads must load exactly the saved
//! values (no silent acceptance of a corrupt file). `cargo fuzz` targets for longer runs
//! are in fuzz/ (see docs/testing.md).

use tapegrad_layers::checkpoint;
use tapegrad_layers::optimizers::{Adam, Optimizer};
use tapegrad_layers::random::set_seed;
use tapegrad_layers::{losses, Activation, Dense, InputSpec, Layer, Mode, Result, Sequential};
use tapegrad_tensor::{Device, GradientTape, Tensor};

/// Mutants tried: about 15 s in a test build on a busy 2-core machine.
const MUTANTS: usize = 3_000;

fn mlp(seed: u64) -> Result<Sequential> {
    set_seed(seed);
    let m = Sequential::new().add(Dense::new(5)).add(Activation::relu()).add(Dense::new(3));
    m.build(&InputSpec::new([1, 4]))?;
    Ok(m)
}

/// Every variable's and optimizer slot's bits.
fn state(model: &dyn Layer, opt: &dyn Optimizer) -> Vec<Vec<u32>> {
    let bits = |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    let mut out: Vec<Vec<u32>> = model.named_variables().iter().map(|(_, v)| bits(&v.value_untracked())).collect();
    for v in model.trainable_variables() {
        out.extend(opt.slots().get(&v).into_iter().flatten().flatten().map(bits));
    }
    out.push(vec![opt.iterations() as u32]);
    out
}

/// xorshift64*: reproducible mutations without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to three random edits of `bytes`.
fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut m = bytes.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(m.len());
        match rng.below(7) {
            0 | 1 => m[at] ^= 1 << rng.below(8),
            2 => m[at] = rng.next() as u8,
            3 => m.truncate(at),
            4 => m.insert(at, rng.next() as u8),
            5 => {
                m.remove(at.min(m.len().saturating_sub(1)));
            }
            _ => {
                let (from, len) = (rng.below(m.len()), 1 + rng.below(16));
                let run: Vec<u8> = m[from..(from + len).min(m.len())].to_vec();
                let to = rng.below(m.len());
                for (i, b) in run.into_iter().enumerate() {
                    if let Some(slot) = m.get_mut(to + i) {
                        *slot = b;
                    }
                }
            }
        }
        if m.is_empty() {
            break;
        }
    }
    m
}

#[test]
fn mutated_checkpoints_never_panic_nor_load_wrong_values() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("tapegrad-ckpt-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = mlp(1)?;
    let mut opt = Adam::new(0.01);
    let x = Tensor::from_vec((0..16).map(|i| (i as f32 - 8.0) / 4.0).collect::<Vec<_>>(), [4, 4], &Device::Cpu)?;
    let y = Tensor::from_vec(vec![0i64, 1, 2, 0], [4], &Device::Cpu)?;
    for _ in 0..2 {
        let tape = GradientTape::new();
        let loss = tape.record(|| losses::sparse_categorical_crossentropy(&y, &model.call(&x, Mode::Train)?, true))?;
        let grads = tape.gradient(&loss, &model.trainable_variables())?;
        opt.apply_gradients(&grads, &model.trainable_variables())?;
    }
    let seed_file = dir.join("seed.safetensors");
    checkpoint::save(&seed_file, &model, Some(&opt), 2)?;
    let original = std::fs::read(&seed_file).unwrap();
    let expected = state(&model, &opt);

    let target = mlp(2)?;
    let mut target_opt = Adam::new(0.01);
    checkpoint::load(&seed_file, &target, Some(&mut target_opt))?;
    let mutant = dir.join("mutant.safetensors");
    let (mut accepted, mut rejected) = (0, 0);
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    for i in 0..MUTANTS {
        let bytes = mutate(&original, &mut rng);
        std::fs::write(&mutant, &bytes).unwrap();
        match checkpoint::load(&mutant, &target, Some(&mut target_opt)) {
            Ok(info) => {
                accepted += 1;
                assert_eq!(info.step, 2, "mutant {i} loaded another step");
                assert!(state(&target, &target_opt) == expected, "mutant {i} loaded changed values");
            }
            Err(e) => {
                rejected += 1;
                assert!(e.to_string().contains("mutant.safetensors"), "mutant {i}: {e}");
            }
        }
    }
    // Mutants that still load are the harmless ones (header padding, whitespace).
    println!("{accepted} mutants loaded the original values, {rejected} were rejected");
    assert!(rejected > MUTANTS * 9 / 10);
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}
