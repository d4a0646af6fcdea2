//! Any bytes given to the checkpoint loader: no panic, and whatever loads saves and loads
//! again. Seed the corpus with real checkpoints (see docs/testing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tapegrad_layers::optimizers::Adam;
use tapegrad_layers::{checkpoint, Activation, Dense, InputSpec, Layer, Sequential};

fn model() -> &'static Sequential {
    static MODEL: OnceLock<Sequential> = OnceLock::new();
    MODEL.get_or_init(|| {
        let m = Sequential::new().add(Dense::new(5)).add(Activation::relu()).add(Dense::new(3));
        m.build(&InputSpec::new([1, 4])).expect("the model builds");
        m
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("tapegrad-fuzz-{}.safetensors", std::process::id()));
    std::fs::write(&path, data).expect("the temporary file is writable");
    let mut opt = Adam::new(0.01);
    if let Ok(info) = checkpoint::load(&path, model(), Some(&mut opt)) {
        checkpoint::save(&path, model(), Some(&opt), info.step).expect("a loaded state saves");
        checkpoint::load(&path, model(), Some(&mut opt)).expect("a saved state loads");
    }
});
