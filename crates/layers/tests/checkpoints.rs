//! Checkpoint round trips (bit-exact, optimizer state included) and failures.

use std::path::PathBuf;
use tapegrad_layers::checkpoint::{self, info};
use tapegrad_layers::optimizers::{Adam, Optimizer, Sgd};
use tapegrad_layers::random::set_seed;
use tapegrad_layers::{losses, Activation, Dense, Error, InputSpec, Layer, Mode, Result, Sequential};
use tapegrad_tensor::{Device, GradientTape, Tensor};

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tapegrad-ckpt-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mlp(seed: u64) -> Result<Sequential> {
    set_seed(seed);
    let m = Sequential::new().add(Dense::new(6)).add(Activation::relu()).add(Dense::new(3));
    m.build(&InputSpec::new([1, 4]))?;
    Ok(m)
}

fn batch() -> Result<(Tensor, Tensor)> {
    let x: Vec<f32> = (0..32).map(|i| ((i * 13 % 7) as f32 - 3.0) / 3.0).collect();
    Ok((
        Tensor::from_vec(x, [8, 4], &Device::Cpu)?,
        Tensor::from_vec(vec![0i64, 1, 2, 0, 1, 2, 0, 1], [8], &Device::Cpu)?,
    ))
}

fn train_step(model: &Sequential, opt: &mut dyn Optimizer) -> Result<f32> {
    let (x, y) = batch()?;
    let tape = GradientTape::new();
    let loss = tape.record(|| {
        let logits = model.call(&x, Mode::Train)?;
        losses::sparse_categorical_crossentropy(&y, &logits, true)
    })?;
    let grads = tape.gradient(&loss, &model.trainable_variables())?;
    opt.apply_gradients(&grads, &model.trainable_variables())?;
    Ok(loss.to_scalar::<f32>()?)
}

fn values(model: &dyn Layer) -> Vec<(String, Vec<u32>)> {
    model
        .named_variables()
        .into_iter()
        .map(|(n, v)| (n, v.value_untracked().to_vec::<f32>().unwrap().iter().map(|f| f.to_bits()).collect()))
        .collect()
}

fn slot_bits(opt: &dyn Optimizer, model: &dyn Layer) -> Vec<Vec<u32>> {
    model
        .trainable_variables()
        .iter()
        .flat_map(|v| opt.slots().get(v).unwrap().to_vec())
        .map(|t| t.unwrap().to_vec::<f32>().unwrap().iter().map(|f| f.to_bits()).collect())
        .collect()
}

#[test]
fn round_trip_is_bit_exact_with_optimizer_state() -> Result<()> {
    let dir = temp_dir("roundtrip");
    let path = dir.join("model.safetensors");
    let model = mlp(1)?;
    let mut opt = Adam::new(0.01);
    for _ in 0..3 {
        train_step(&model, &mut opt)?;
    }
    checkpoint::save(&path, &model, Some(&opt), 3)?;
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file is left behind");
    let meta = info(&path)?;
    assert_eq!((meta.step, meta.optimizer.as_deref(), meta.optimizer_iterations), (3, Some("Adam"), Some(3)));

    let restored = mlp(2)?;
    assert_ne!(values(&restored), values(&model));
    let mut restored_opt = Adam::new(0.01);
    let loaded = checkpoint::load(&path, &restored, Some(&mut restored_opt))?;
    assert_eq!(loaded.step, 3);
    assert_eq!(values(&restored), values(&model));
    assert_eq!(restored_opt.iterations(), 3);
    assert_eq!(slot_bits(&restored_opt, &restored), slot_bits(&opt, &model));

    // Training on continues identically: the moments and the step count were restored.
    let a = train_step(&model, &mut opt)?;
    let b = train_step(&restored, &mut restored_opt)?;
    assert_eq!(a.to_bits(), b.to_bits());
    assert_eq!(values(&restored), values(&model));

    // Weights alone load without an optimizer.
    let weights_only = mlp(3)?;
    checkpoint::load(&path, &weights_only, None)?;
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn mismatches_are_all_reported_and_nothing_changes() -> Result<()> {
    let dir = temp_dir("mismatch");
    let path = dir.join("ckpt.safetensors");
    // A file whose names and shapes differ from the model: a first layer of 5 units, not
    // 6, and the second Dense at index 3, not 2.
    set_seed(9);
    let other = Sequential::new().add(Dense::new(5)).add(Activation::relu()).add(Activation::relu()).add(Dense::new(3));
    other.build(&InputSpec::new([1, 4]))?;
    checkpoint::save(&path, &other, None, 0)?;

    let model = mlp(4)?;
    let before = values(&model);
    let err = checkpoint::load(&path, &model, None).unwrap_err();
    let Error::Mismatch { problems, .. } = &err else { panic!("expected a mismatch, got {err}") };
    let text = err.to_string();
    assert_eq!(problems.len(), 6, "{text}");
    assert!(text.contains("0.bias: shape [5] in the file, [6] in the model"), "{text}");
    assert!(text.contains("2.kernel: missing from the file"), "{text}");
    assert!(text.contains("3.kernel: in the file but not in the model"), "{text}");
    assert!(text.contains("ckpt.safetensors"), "{text}");
    assert_eq!(values(&model), before, "a failed load changes nothing");

    // A checkpoint without optimizer state, or of another optimizer, does not load into one.
    let good = dir.join("good.safetensors");
    let mut adam = Adam::new(0.1);
    train_step(&model, &mut adam)?;
    checkpoint::save(&good, &model, None, 0)?;
    let err = checkpoint::load(&good, &model, Some(&mut adam)).unwrap_err().to_string();
    assert!(err.contains("holds no optimizer state"), "{err}");
    checkpoint::save(&good, &model, Some(&adam), 1)?;
    let err = checkpoint::load(&good, &model, Some(&mut Sgd::new(0.1))).unwrap_err().to_string();
    assert!(err.contains("Adam optimizer state, but a SGD optimizer"), "{err}");

    // Dtypes are checked too: an f64 model's file does not load into an f32 model.
    let f64_model = Sequential::new().add(Dense::new(6)).add(Activation::relu()).add(Dense::new(3));
    f64_model.build(&InputSpec::new([1, 4]).with_dtype(tapegrad_tensor::DType::F64))?;
    checkpoint::save(&good, &f64_model, None, 0)?;
    let err = checkpoint::load(&good, &model, None).unwrap_err();
    let Error::Mismatch { problems, .. } = &err else { panic!("expected a mismatch, got {err}") };
    assert_eq!(problems.len(), 4, "{err}");
    assert!(problems[0].contains("0.kernel: dtype F64 in the file, f32 in the model"), "{err}");

    // An unbuilt model says so.
    let unbuilt = Sequential::new().add(Dense::new(6));
    let err = checkpoint::load(&good, &unbuilt, None).unwrap_err().to_string();
    assert!(err.contains("build the model"), "{err}");
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn truncated_or_corrupt_files_fail_cleanly() -> Result<()> {
    let dir = temp_dir("truncated");
    let path = dir.join("full.safetensors");
    let model = mlp(5)?;
    let mut opt = Sgd::new(0.1).momentum(0.9);
    train_step(&model, &mut opt)?;
    checkpoint::save(&path, &model, Some(&opt), 1)?;
    let bytes = std::fs::read(&path).unwrap();
    let bad = dir.join("bad.safetensors");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for cut in [0, 3, 8, 8 + header_len / 2, 8 + header_len, bytes.len() - 1] {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let err = checkpoint::load(&bad, &model, Some(&mut opt)).unwrap_err();
        assert!(matches!(err, Error::Checkpoint { .. }), "cut at {cut}: {err}");
        assert!(err.to_string().contains("bad.safetensors"), "{err}");
    }
    // Garbage in the header, and a header length beyond the file.
    let mut corrupt = bytes.clone();
    corrupt[10] = b'#';
    std::fs::write(&bad, &corrupt).unwrap();
    assert!(matches!(checkpoint::load(&bad, &model, None), Err(Error::Checkpoint { .. })));
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&bad, &huge).unwrap();
    assert!(matches!(checkpoint::load(&bad, &model, None), Err(Error::Checkpoint { .. })));
    // A missing file is an I/O error naming it.
    let err = checkpoint::load(dir.join("nope.safetensors"), &model, None).unwrap_err().to_string();
    assert!(err.contains("nope.safetensors"), "{err}");
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}
