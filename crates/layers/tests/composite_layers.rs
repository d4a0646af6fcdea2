//! A composite layer that forgets a sublayer in `visit_sublayers` uses its weights but
//! would never train, save or count them: build and summary report it, naming the
//! variable, instead of losing it silently.

use tapegrad_layers::{Dense, InputSpec, Layer, Mode, Result};
use tapegrad_tensor::Tensor;

/// Two dense layers; `list_both` decides whether `visit_sublayers` lists the second.
struct TwoDense {
    first: Dense,
    second: Dense,
    list_both: bool,
}

impl Layer for TwoDense {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.second.call(&self.first.call(x, mode)?, mode)
    }

    fn visit_sublayers(&self, visit: &mut dyn FnMut(&str, &dyn Layer)) {
        visit("first", &self.first);
        if self.list_both {
            visit("second", &self.second);
        }
    }
}

fn model(list_both: bool) -> TwoDense {
    TwoDense { first: Dense::new(4), second: Dense::new(2).named("head"), list_both }
}

#[test]
fn a_forgotten_sublayer_fails_build_naming_its_variable() {
    let msg = model(false).build(&InputSpec::new([1, 3])).unwrap_err().to_string();
    assert!(msg.contains("head/kernel") && msg.contains("visit_sublayers"), "{msg}");
    model(true).build(&InputSpec::new([1, 3])).unwrap();
}

#[test]
fn a_forgotten_sublayer_fails_summary_too() {
    let msg = model(false).summary(&InputSpec::new([1, 3])).unwrap_err().to_string();
    assert!(msg.contains("head/kernel"), "{msg}");
    let summary = model(true).summary(&InputSpec::new([1, 3])).unwrap();
    assert_eq!(summary.params.trainable, 3 * 4 + 4 + 4 * 2 + 2);
}

#[test]
fn a_forgotten_sublayer_fails_fit_at_its_first_step() {
    use tapegrad_layers::optimizers::Adam;
    use tapegrad_layers::training::{FitOptions, TensorDataset, Trainer};
    use tapegrad_tensor::{DType, Device};
    let x = Tensor::zeros([8, 3], DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::from_vec(vec![0i64, 1, 0, 1, 0, 1, 0, 1], [8], &Device::Cpu).unwrap();
    let data = TensorDataset::new(x, y, 4).unwrap();
    let model = model(false);
    let loss = |y: &Tensor, p: &Tensor| tapegrad_layers::losses::sparse_categorical_crossentropy(y, p, true);
    let mut trainer = Trainer::new(&model, Adam::new(0.01), loss);
    let msg = trainer.fit(&data, FitOptions::new().epochs(1).verbose(0)).unwrap_err().to_string();
    assert!(msg.contains("head/kernel"), "{msg}");
}

/// A user layer holding a user layer: the inner one's output shape reaches the summary
/// with no code of its own (the `Layer::call` wrapper records it).
struct Outer {
    inner: TwoDense,
}

impl Layer for Outer {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.inner.call(x, mode)?.relu().map_err(Into::into)
    }

    fn visit_sublayers(&self, visit: &mut dyn FnMut(&str, &dyn Layer)) {
        visit("inner", &self.inner);
    }
}

#[test]
fn user_layers_show_their_output_shapes_in_summaries() {
    let summary = Outer { inner: model(true) }.summary(&InputSpec::new([1, 3])).unwrap();
    assert_eq!(summary.rows.len(), 1);
    assert_eq!(summary.rows[0].output_shape.as_deref(), Some("(None, 2)"), "{summary}");
    let nested = tapegrad_layers::summary_nested(&Outer { inner: model(true) }, &InputSpec::new([1, 3])).unwrap();
    let shapes: Vec<_> = nested.rows.iter().map(|r| r.output_shape.clone()).collect();
    assert!(shapes.iter().all(Option::is_some), "{nested}");
}
