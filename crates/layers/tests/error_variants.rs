//! A layer error raised inside `GradientTape::record` (whose closure returns the tensor
//! crate's `Result`) comes out of the `?` after it as the same variant, with the same
//! message; tensor errors stay tensor errors.

use tapegrad_layers::{Conv2D, Dense, Error, Layer, Mode, Result};
use tapegrad_tensor::{Device, GradientTape, Tensor};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, tapegrad_tensor::DType::F32, &Device::Cpu).unwrap()
}

fn recorded(model: &dyn Layer, x: &Tensor) -> Result<Tensor> {
    let tape = GradientTape::new();
    let y = tape.record(|| Ok(model.call(x, Mode::Train)?))?;
    Ok(y)
}

#[test]
fn a_layer_error_keeps_its_variant_through_record() {
    let direct = Conv2D::new(4, 3).call(&zeros(&[2, 8]), Mode::Train).unwrap_err();
    let through = recorded(&Conv2D::new(4, 3), &zeros(&[2, 8])).unwrap_err();
    assert_eq!(std::mem::discriminant(&direct), std::mem::discriminant(&through), "{direct:?} / {through:?}");
    assert!(matches!(through, Error::Layer { .. } | Error::InLayer { .. }), "{through:?}");
    // The layer's name differs (a new layer each time); the rest of the message is the same.
    let tail = |e: &Error| e.to_string().split_once(':').map(|(_, t)| t.to_string()).unwrap();
    assert_eq!(tail(&direct), tail(&through));
}

#[test]
fn a_tensor_error_stays_a_tensor_error() {
    let a = zeros(&[2, 3]);
    let b = zeros(&[4, 5]);
    let tape = GradientTape::new();
    let err: Error = tape.record(|| a.matmul(&b)).map_err(Error::from).unwrap_err();
    assert!(matches!(err, Error::Tensor(tapegrad_tensor::Error::Invalid { op: "matmul", .. })), "{err:?}");
}

#[test]
fn a_program_error_displays_as_itself() {
    let model = Dense::new(3);
    let tape = GradientTape::new();
    let err =
        tape.record(|| -> tapegrad_tensor::Result<Tensor> { Ok(model.call(&zeros(&[2]), Mode::Train)?) }).unwrap_err();
    assert!(matches!(err, tapegrad_tensor::Error::External(_)), "{err:?}");
    assert!(!err.to_string().starts_with("layers:"), "no extra prefix: {err}");
}
